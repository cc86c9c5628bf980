"""Ingest settings (environment prefix LINESIDE_INGEST_)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from lineside.settings import Connection
from lineside.text import MAX_DOCUMENT_MB


class IngestSettings(Connection, kw_only=True):
    """What the ingest service needs to run."""

    client_id: Annotated[str, msgspec.Meta(description="MQTT client id; fixed so the persistent session survives restarts")] = (
        "lineside-ingest"
    )
    inbox_poll_s: Annotated[
        float, msgspec.Meta(description="How often <data>/inbox is scanned; a file is taken once its size is stable across two scans", gt=0)
    ] = 2.0
    max_document_mb: Annotated[float, msgspec.Meta(description="Largest document accepted, in MiB", gt=0)] = float(MAX_DOCUMENT_MB)
    # 30 s: the CLI sends pieces back to back (milliseconds apart on a LAN), so half a minute of
    # silence means the sender died or lost its connection, while a brief broker reconnect fits.
    transfer_stall_s: Annotated[
        float,
        msgspec.Meta(
            description="A document sent piecewise that gets no new piece for this many seconds is failed and its spool file removed",
            gt=0,
        ),
    ] = 30.0
    # 16 at once: a batch is sent one file after another, so this only bounds many senders at once;
    # each transfer holds one open spool file of up to max_document_mb on disk.
    max_transfers: Annotated[
        int,
        msgspec.Meta(description="Documents that may be arriving piecewise at the same time; one more is refused until one finishes", ge=1),
    ] = 16
