"""Web page server settings (environment prefix LINESIDE_WEB_; the broker connection as for every service)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from lineside.settings import Connection


class WebSettings(Connection, kw_only=True):
    """What the page's server needs: where it listens, its TLS files, Mosquitto's WebSocket listener,
    and (for the operators' device accounts) its own broker account ``web``."""

    port: Annotated[int, msgspec.Meta(description="HTTPS port of the page (lineside up --web-port)", ge=1, le=65535)] = 8443
    bind: Annotated[str, msgspec.Meta(description="Address the page listens on; phones and tablets reach it over the plant network")] = (
        "0.0.0.0"  # noqa: S104 - the page is for devices on the plant network
    )
    ws_port: Annotated[int, msgspec.Meta(description="Mosquitto's MQTT-over-WebSockets listener on 127.0.0.1", ge=1, le=65535)] = 9001
    certfile: Annotated[str, msgspec.Meta(description="The broker's TLS certificate (<data>/security/certs/server.crt)")] = ""
    keyfile: Annotated[str, msgspec.Meta(description="Its private key")] = ""
    client_id: Annotated[str, msgspec.Meta(description="MQTT client id of the device-account handler")] = "lineside-web"
