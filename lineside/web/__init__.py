"""The technician's web page: a small HTTPS server for the page's files that passes the page's
MQTT over WebSockets through to Mosquitto (docs/web.md)."""
