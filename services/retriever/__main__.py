"""Retriever wiring: settings, model, index, bus, consumers."""

from __future__ import annotations

import os

# OpenMP threads (torch, FAISS) spin for a while after each parallel region (libgomp: 300,000
# rounds); on a 2-core box that spin steals the cores llama.cpp is about to use for the answer.
# Sleeping at once (OMP_WAIT_POLICY=PASSIVE) costs every region a wake-up instead: the question's
# embedding took 11.2 instead of 5.3 ms. A short spin keeps both: 10,000 rounds, a few microseconds
# (bench/retrieval_100k.py: p95 29.9 vs 38.5 ms with PASSIVE on this project's machine).
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import asyncio
import datetime as dt
import time
from pathlib import Path

import msgspec

from lineside.bus import Bus, run_forever
from lineside.log import configure
from lineside.runtime import ComputeThread, Counters, decoded, run
from lineside.settings import load
from schemas import codec, topics
from schemas.messages import (
    DeleteDocument,
    DocumentInfo,
    IndexChunks,
    IngestStatus,
    KbListReply,
    KbListRequest,
    RetrieveReply,
    RetrieveRequest,
    RetrieverInbox,
)
from services.retriever.adapters import Index, MiniLM
from services.retriever.handlers import Filters, embedding_text
from services.retriever.search import SearchResult
from services.retriever.search import search as search_passages
from services.retriever.settings import RetrieverSettings

MIN_POOL = 32
"""Each ranking contributes at least this many candidates: fusion needs depth to agree on."""

SEARCH_WORKERS = 2
"""Two searches in flight: one embeds while the other's FAISS scan and SQLite lookup run."""


def today_of(req: RetrieveRequest) -> dt.date:
    """The day relative dates are counted from: the request's, else this machine's (local time)."""
    if req.today:
        try:
            return dt.date.fromisoformat(req.today)
        except ValueError:
            pass
    return dt.date.today()


async def main() -> None:
    """Load the model and index, then serve searches and index updates until cancelled."""
    settings = load(RetrieverSettings, "LINESIDE_RETRIEVER_")
    log = configure("retriever")
    t0 = time.perf_counter()
    compute = ComputeThread("embed")
    embedder = await compute.run(MiniLM, settings.threads, settings.batch_size)
    index = Index(Path(settings.data_dir) / "index")
    log.info("ready", chunks=len(index), docs=len(index.documents()), load_s=round(time.perf_counter() - t0, 2))
    decode = codec.decoder(RetrieverInbox)
    model_lock = asyncio.Semaphore(1)  # torch already uses every core; two embeds at once only thrash
    counters = Counters()
    json_enc = msgspec.json.Encoder()

    def search(req: RetrieveRequest) -> SearchResult:
        k = min(req.top_k, settings.max_top_k)
        scope = Filters(line=req.line, machine=req.machine, doc_type=req.doc_type)
        return search_passages(
            index,
            lambda text: embedder.embed([text])[0],
            req.question,
            k,
            max(k * settings.oversample, MIN_POOL),
            filters=scope,
            today=today_of(req),
        )

    async def handle_search(bus: Bus, req: RetrieveRequest) -> None:
        t = time.perf_counter()
        try:
            async with model_lock:
                found = await compute.run(search, req)
            reply = RetrieveReply(
                request_id=req.request_id,
                passages=found.passages,
                unknown_terms=found.unknown_terms,
                exact_match=found.exact_match,
                content_words=found.content_words,
                absent_words=found.absent_words,
                best_score=found.best_score,
                latency_ms=(time.perf_counter() - t) * 1000,
            )
        except Exception as exc:  # a failed search is answered with an error, never silence
            log.exception("search_failed", request_id=req.request_id)
            reply = RetrieveReply(request_id=req.request_id, error=f"search failed: {exc}")
        if topics.is_valid_publish_topic(req.reply_to):
            await bus.publish(req.reply_to, codec.encode(reply))
        log.info(
            "search",
            request_id=req.request_id,
            passages=len(reply.passages),
            best=round(max(p.score for p in reply.passages), 3) if reply.passages else None,
            unknown=reply.unknown_terms or None,
            exact=reply.exact_match,
            absent=reply.absent_words or None,
            latency_ms=round(reply.latency_ms, 1),
        )

    async def status(bus: Bus, st: IngestStatus) -> None:
        await bus.publish(topics.INGEST_STATUS, json_enc.encode(st))

    async def handle_index(bus: Bus, msg: IndexChunks) -> None:
        t = time.perf_counter()
        if index.version_of(msg.doc) == msg.version:
            await status(
                bus, IngestStatus(request_id=msg.request_id, doc=msg.doc, doc_id=msg.doc_id, stage="unchanged", chunks=len(msg.chunks))
            )
            log.info("index_unchanged", doc=msg.doc, request_id=msg.request_id)
            return
        try:
            async with model_lock:
                vectors = await compute.run(embedder.embed, [embedding_text(c) for c in msg.chunks])
            await asyncio.to_thread(index.replace, msg.doc, msg.doc_id, msg.version, msg.chunks, vectors)
        except Exception as exc:
            log.exception("index_failed", doc=msg.doc, request_id=msg.request_id)
            await status(
                bus,
                IngestStatus(request_id=msg.request_id, doc=msg.doc, doc_id=msg.doc_id, stage="failed", reason=f"indexing failed: {exc}"),
            )
            return
        await status(bus, IngestStatus(request_id=msg.request_id, doc=msg.doc, doc_id=msg.doc_id, stage="indexed", chunks=len(msg.chunks)))
        log.info(
            "indexed", doc=msg.doc, request_id=msg.request_id, chunks=len(msg.chunks), latency_ms=round((time.perf_counter() - t) * 1000, 1)
        )

    async def handle_delete(bus: Bus, msg: DeleteDocument) -> None:
        found = await asyncio.to_thread(index.delete, msg.doc)
        await status(
            bus,
            IngestStatus(
                request_id=msg.request_id, doc=msg.doc, stage="deleted" if found else "failed", reason="" if found else "no such document"
            ),
        )
        log.info("delete", doc=msg.doc, found=found, request_id=msg.request_id)

    async def handle_list(bus: Bus, msg: KbListRequest) -> None:
        docs = [DocumentInfo(doc=d, version=v, chunks=n, ingested_at=t) for d, v, n, t in index.documents()]
        if topics.is_valid_publish_topic(msg.reply_to):
            await bus.publish(msg.reply_to, codec.encode(KbListReply(request_id=msg.request_id, documents=docs)))
        log.info("kb_list", request_id=msg.request_id, documents=len(docs))

    async def consume(bus: Bus) -> None:
        searches: asyncio.Queue[RetrieveRequest] = asyncio.Queue()
        updates: asyncio.Queue[IndexChunks | DeleteDocument] = asyncio.Queue()

        async def dispatch() -> None:
            async for msg in decoded(bus.messages(), decode, counters, log):
                if isinstance(msg, RetrieveRequest):
                    searches.put_nowait(msg)
                elif isinstance(msg, KbListRequest):
                    await handle_list(bus, msg)
                else:
                    updates.put_nowait(msg)

        async def search_worker() -> None:
            while True:
                await handle_search(bus, await searches.get())

        async def update_worker() -> None:
            while True:
                msg = await updates.get()
                if isinstance(msg, IndexChunks):
                    await handle_index(bus, msg)
                else:
                    await handle_delete(bus, msg)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(dispatch(), name="dispatch")
            for i in range(SEARCH_WORKERS):
                tg.create_task(search_worker(), name=f"search-{i}")
            tg.create_task(update_worker(), name="index")

    def make_bus() -> Bus:
        return Bus(
            settings,
            client_id=settings.client_id,
            service="retriever",
            subscriptions=(topics.RETRIEVE, topics.INDEX, topics.KB),
            persistent=True,
        )

    try:
        await run_forever(make_bus, consume, lambda err, wait: log.warning("reconnecting", error=err, wait_s=round(wait, 2)))
    finally:
        index.close()


if __name__ == "__main__":
    run(main)
