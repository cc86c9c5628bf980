"""Ingest wiring: settings, drop folder, spool for piecewise transfers, service."""

from __future__ import annotations

from pathlib import Path

from lineside.log import configure
from lineside.metrics import IngestMetrics
from lineside.runtime import run
from lineside.settings import load
from services.ingest.inbox import DropFolder
from services.ingest.service import IngestService
from services.ingest.settings import IngestSettings
from services.ingest.transfer import Transfers


async def main() -> None:
    """Receive documents over MQTT (whole or piecewise) and from the drop folder until cancelled."""
    settings = load(IngestSettings, "LINESIDE_INGEST_")
    log = configure("ingest")
    inbox = DropFolder(Path(settings.data_dir) / "inbox")
    transfers = Transfers(
        Path(settings.data_dir) / "ingest" / "spool",
        max_bytes=int(settings.max_document_mb * 2**20),
        stall_s=settings.transfer_stall_s,
        max_active=settings.max_transfers,
    )
    try:
        metrics = IngestMetrics()
        metrics.serve_from_env(log)
        await IngestService(settings, inbox, transfers, log, metrics=metrics).run()
    finally:
        transfers.close()


if __name__ == "__main__":
    run(main)
