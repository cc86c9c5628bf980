"""Gateway wiring: settings, the coverage calibration, the device registry, service."""

from __future__ import annotations

from pathlib import Path

from lineside import audit, coverage
from lineside.log import configure
from lineside.metrics import GatewayMetrics
from lineside.runtime import run
from lineside.settings import load
from services.gateway.devices import DeviceLines
from services.gateway.journal import FILE_NAME, Journal
from services.gateway.service import Gateway
from services.gateway.settings import GatewaySettings


async def main() -> None:
    """Serve device questions until cancelled."""
    settings = load(GatewaySettings, "LINESIDE_GATEWAY_")
    cov = load(coverage.CoverageSettings, coverage.ENV_PREFIX)
    log = configure("gateway")
    accounts = Path(settings.accounts_file) if settings.accounts_file else Path(settings.data_dir) / "security" / "accounts.json"
    metrics = GatewayMetrics(Path(settings.data_dir))
    metrics.serve_from_env(log)
    trail = audit.AuditLog(Path(settings.data_dir) / audit.FILE_NAME, retention_days=settings.audit_retention_days)
    journal = Journal(Path(settings.data_dir) / FILE_NAME, settings.journal_keep_s)
    try:
        await Gateway(settings, cov, DeviceLines(accounts), log, metrics=metrics, audit=trail, journal=journal).run()
    finally:
        trail.close()
        journal.close()


if __name__ == "__main__":
    run(main)
