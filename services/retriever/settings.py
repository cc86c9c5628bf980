"""Retriever settings (environment prefix LINESIDE_RETRIEVER_)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from lineside.settings import Connection


class RetrieverSettings(Connection, kw_only=True):
    """What the retriever needs to run."""

    client_id: Annotated[str, msgspec.Meta(description="MQTT client id; fixed so the persistent session survives restarts")] = (
        "lineside-retriever"
    )
    threads: Annotated[
        int, msgspec.Meta(description="Threads for embedding (numpy BLAS): 2 embeds 289 instead of 208 chunks/s on 2 cores", ge=1)
    ] = 2
    batch_size: Annotated[int, msgspec.Meta(description="Chunks embedded per batch while indexing (bench/ingest.py --batch)", ge=1)] = 32
    oversample: Annotated[int, msgspec.Meta(description="Vector candidates fetched per requested passage before filtering", ge=1)] = 8
    max_top_k: Annotated[int, msgspec.Meta(description="Upper bound on passages per search", ge=1)] = 20
    keep_versions: Annotated[
        int, msgspec.Meta(description="Earlier versions of each document kept for `lineside kb rollback` (0: none)", ge=0)
    ] = 5
