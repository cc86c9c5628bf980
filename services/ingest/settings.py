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
    max_document_mb: Annotated[float, msgspec.Meta(description="Largest document accepted, in MiB", gt=0)] = 50.0
