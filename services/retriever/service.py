"""The retriever service: owns the embedder and the index, one method per kind of inbound message."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import msgspec

from lineside.bus import Bus, run_forever
from lineside.runtime import ComputeThread, Counters, decoded
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
from services.retriever.adapters import Embedder, Index
from services.retriever.handlers import Filters, embedding_text
from services.retriever.search import SearchResult, search
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


class Retriever:
    """Searches (``RetrieveRequest``), index updates (``IndexChunks``, ``DeleteDocument``) and
    knowledge-base listings (``KbListRequest``) over one index and one embedding model.

    Model calls (embedding, FAISS) run on one compute thread; searches are answered by
    ``SEARCH_WORKERS`` workers, index updates one at a time in arrival order.
    """

    def __init__(self, settings: RetrieverSettings, embedder: Embedder, index: Index, compute: ComputeThread, log: Any) -> None:
        self.settings = settings
        self.embedder = embedder
        self.index = index
        self.compute = compute
        self.log = log
        self.counters = Counters()
        self.model_lock = asyncio.Semaphore(1)  # the embedder uses every core it is given; two at once only thrash
        self.searches: asyncio.Queue[RetrieveRequest] = asyncio.Queue()
        self.updates: asyncio.Queue[IndexChunks | DeleteDocument] = asyncio.Queue()
        self._decode = codec.decoder(RetrieverInbox)
        self._json = msgspec.json.Encoder()

    async def prepare(self) -> None:
        """Re-embed an index built with another embedding model before serving."""
        if self.index.stale:
            self.log.info("reembedding", model=self.embedder.name, note="the index was built with another embedding model")
            t = time.perf_counter()
            n = await self.compute.run(self.index.reembed, self.embedder.embed, embedding_text)
            self.log.info("reembedded", chunks=n, model=self.embedder.name, latency_s=round(time.perf_counter() - t, 1))

    def find(self, req: RetrieveRequest) -> SearchResult:
        """The search itself (on the compute thread)."""
        k = min(req.top_k, self.settings.max_top_k)
        return search(
            self.index,
            lambda text: self.embedder.embed([text])[0],
            req.question,
            k,
            max(k * self.settings.oversample, MIN_POOL),
            filters=Filters(line=req.line, machine=req.machine, doc_type=req.doc_type),
            today=today_of(req),
        )

    async def on_message(self, bus: Bus, msg: RetrieverInbox) -> None:
        """Dispatch one inbound message by its type."""
        match msg:
            case RetrieveRequest():
                self.searches.put_nowait(msg)
            case KbListRequest():
                await self.on_list(bus, msg)
            case IndexChunks() | DeleteDocument():
                self.updates.put_nowait(msg)

    async def on_search(self, bus: Bus, req: RetrieveRequest) -> None:
        """Search and reply; a failed search is answered with an error, never silence."""
        t = time.perf_counter()
        try:
            async with self.model_lock:
                found = await self.compute.run(self.find, req)
            reply = RetrieveReply(
                request_id=req.request_id,
                passages=found.passages,
                unknown_terms=found.unknown_terms,
                exact_match=found.exact_match,
                content_words=found.content_words,
                absent_words=found.absent_words,
                best_score=found.best_score,
                unknown_lines=found.unknown_lines,
                latency_ms=(time.perf_counter() - t) * 1000,
            )
        except Exception as exc:
            self.log.exception("search_failed", request_id=req.request_id)
            reply = RetrieveReply(request_id=req.request_id, error=f"search failed: {exc}")
        if topics.is_valid_publish_topic(req.reply_to):
            await bus.publish(req.reply_to, codec.encode(reply))
        self.log.info(
            "search",
            request_id=req.request_id,
            passages=len(reply.passages),
            best=round(reply.best_score, 3) if reply.best_score is not None else None,
            unknown=reply.unknown_terms or None,
            exact=reply.exact_match,
            absent=reply.absent_words or None,
            latency_ms=round(reply.latency_ms, 1),
        )

    async def _status(self, bus: Bus, st: IngestStatus) -> None:
        await bus.publish(topics.INGEST_STATUS, self._json.encode(st))

    async def on_index(self, bus: Bus, msg: IndexChunks) -> None:
        """Embed and store a document's chunks, replacing its older version in one transaction."""
        t = time.perf_counter()
        if self.index.version_of(msg.doc) == msg.version:
            await self._status(
                bus, IngestStatus(request_id=msg.request_id, doc=msg.doc, doc_id=msg.doc_id, stage="unchanged", chunks=len(msg.chunks))
            )
            self.log.info("index_unchanged", doc=msg.doc, request_id=msg.request_id)
            return
        try:
            async with self.model_lock:
                vectors = await self.compute.run(self.embedder.embed, [embedding_text(c.title, c.text) for c in msg.chunks])
            await asyncio.to_thread(self.index.replace, msg.doc, msg.doc_id, msg.version, msg.chunks, vectors)
        except Exception as exc:
            self.log.exception("index_failed", doc=msg.doc, request_id=msg.request_id)
            await self._status(
                bus,
                IngestStatus(request_id=msg.request_id, doc=msg.doc, doc_id=msg.doc_id, stage="failed", reason=f"indexing failed: {exc}"),
            )
            return
        await self._status(
            bus, IngestStatus(request_id=msg.request_id, doc=msg.doc, doc_id=msg.doc_id, stage="indexed", chunks=len(msg.chunks))
        )
        self.log.info(
            "indexed", doc=msg.doc, request_id=msg.request_id, chunks=len(msg.chunks), latency_ms=round((time.perf_counter() - t) * 1000, 1)
        )

    async def on_delete(self, bus: Bus, msg: DeleteDocument) -> None:
        """Remove a document everywhere."""
        found = await asyncio.to_thread(self.index.delete, msg.doc)
        await self._status(
            bus,
            IngestStatus(
                request_id=msg.request_id, doc=msg.doc, stage="deleted" if found else "failed", reason="" if found else "no such document"
            ),
        )
        self.log.info("delete", doc=msg.doc, found=found, request_id=msg.request_id)

    async def on_list(self, bus: Bus, msg: KbListRequest) -> None:
        """Reply with the stored documents."""
        docs = [DocumentInfo(doc=d, version=v, chunks=n, ingested_at=t) for d, v, n, t in self.index.documents()]
        if topics.is_valid_publish_topic(msg.reply_to):
            await bus.publish(msg.reply_to, codec.encode(KbListReply(request_id=msg.request_id, documents=docs)))
        self.log.info("kb_list", request_id=msg.request_id, documents=len(docs))

    async def _search_worker(self, bus: Bus) -> None:
        while True:
            await self.on_search(bus, await self.searches.get())

    async def _update_worker(self, bus: Bus) -> None:
        while True:
            msg = await self.updates.get()
            if isinstance(msg, IndexChunks):
                await self.on_index(bus, msg)
            else:
                await self.on_delete(bus, msg)

    async def consume(self, bus: Bus) -> None:
        """The dispatcher and the workers, until cancelled or the connection is lost."""

        async def dispatch() -> None:
            async for msg in decoded(bus.messages(), self._decode, self.counters, self.log):
                await self.on_message(bus, msg)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(dispatch(), name="dispatch")
            for i in range(SEARCH_WORKERS):
                tg.create_task(self._search_worker(bus), name=f"search-{i}")
            tg.create_task(self._update_worker(bus), name="index")

    def make_bus(self) -> Bus:
        """The service's connection: persistent session, its three inboxes."""
        return Bus(
            self.settings,
            client_id=self.settings.client_id,
            service="retriever",
            subscriptions=(topics.RETRIEVE, topics.INDEX, topics.KB),
            persistent=True,
        )

    async def run(self) -> None:
        """Serve until cancelled, reconnecting when the broker goes away."""
        await self.prepare()
        await run_forever(self.make_bus, self.consume, lambda err, wait: self.log.warning("reconnecting", error=err, wait_s=round(wait, 2)))
