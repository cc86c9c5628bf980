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
    threads: Annotated[int, msgspec.Meta(description="Torch threads for embedding", ge=1)] = 2
    batch_size: Annotated[
        int,
        msgspec.Meta(
            description="Chunks embedded per batch while indexing (4: as fast as 8 on 2 cores, 52 vs 50 chunks/s on the dev "
            "corpus, and ~90 MiB lower peak memory, 422 vs 515 MiB in-process; bench/ingest.py --batch)",
            ge=1,
        ),
    ] = 4
    oversample: Annotated[int, msgspec.Meta(description="Vector candidates fetched per requested passage before filtering", ge=1)] = 8
    max_top_k: Annotated[int, msgspec.Meta(description="Upper bound on passages per search", ge=1)] = 20
