"""Web page server wiring: settings, log, serve until SIGTERM (`lineside up --web-port` starts it)."""

from __future__ import annotations

from lineside.log import configure
from lineside.runtime import run
from lineside.settings import load
from lineside.web.server import WebServer
from lineside.web.settings import WebSettings


async def main() -> None:
    """Serve the page and pass its WebSockets through to Mosquitto until cancelled."""
    settings = load(WebSettings, "LINESIDE_WEB_")
    await WebServer(settings, configure("web")).run()


if __name__ == "__main__":
    run(main)
