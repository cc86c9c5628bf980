"""Ingest settings (environment prefix LINESIDE_INGEST_)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from lineside.settings import Connection


class IngestSettings(Connection, kw_only=True):
    """What the ingest service needs to run."""

    client_id: Annotated[str, msgspec.Meta(description="MQTT client id; fixed so the persistent session survives restarts")] = (
        "lineside-ingest"
    )
    inbox_poll_s: Annotated[
        float, msgspec.Meta(description="How often <data>/inbox is scanned; a file is taken once its size is stable across two scans", gt=0)
    ] = 2.0
    max_document_mb: Annotated[float, msgspec.Meta(description="Largest document accepted, in MiB", gt=0)] = 50.0
