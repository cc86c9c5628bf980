"""Web page server wiring: settings, log, serve until SIGTERM (`lineside up --web-port` starts it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from lineside.log import configure
from lineside.runtime import run
from lineside.settings import load
from lineside.web.adapters import Accounts
from lineside.web.devices import DeviceAdmin
from lineside.web.server import WebServer
from lineside.web.settings import WebSettings


async def main() -> None:
    """Serve the page and pass its WebSockets through to Mosquitto until cancelled; with a broker
    account (``lineside up`` gives it ``web``), also answer the operators' device-account requests."""
    settings = load(WebSettings, "LINESIDE_WEB_")
    log = configure("web")
    async with asyncio.TaskGroup() as tg:
        tg.create_task(WebServer(settings, log).run())
        if settings.mqtt_username:
            tg.create_task(DeviceAdmin(settings, Accounts(Path(settings.data_dir)), log).run())
        else:
            log.info("device_accounts_off", reason="no broker account (LINESIDE_MQTT_USERNAME): operators manage devices on the box")


if __name__ == "__main__":
    run(main)
