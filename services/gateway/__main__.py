"""Gateway wiring: settings, the coverage calibration, the device registry, service."""

from __future__ import annotations

from pathlib import Path

from lineside import coverage
from lineside.log import configure
from lineside.runtime import run
from lineside.settings import load
from services.gateway.devices import DeviceLines
from services.gateway.service import Gateway
from services.gateway.settings import GatewaySettings


async def main() -> None:
    """Serve device questions until cancelled."""
    settings = load(GatewaySettings, "LINESIDE_GATEWAY_")
    cov = load(coverage.CoverageSettings, coverage.ENV_PREFIX)
    log = configure("gateway")
    accounts = Path(settings.accounts_file) if settings.accounts_file else Path(settings.data_dir) / "security" / "accounts.json"
    await Gateway(settings, cov, DeviceLines(accounts), log).run()


if __name__ == "__main__":
    run(main)
