"""The retriever service: owns the embedder and the index, one method per kind of inbound message."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import msgspec

from lineside.bus import Bus, run_forever
from lineside.durable import DurableQueue
from lineside.metrics import RetrieverMetrics
from lineside.runtime import ComputeThread, Counters, decoded
from schemas import codec, topics
from schemas.messages import (
    DeleteDocument,
    DocumentInfo,
    IndexChunks,
    IngestStatus,
    KbHistoryReply,
    KbHistoryRequest,
    KbListReply,
    KbListRequest,
    KbRollbackReply,
    KbRollbackRequest,
    RetrieveReply,
    RetrieveRequest,
    RetrieverInbox,
    VersionInfo,
)
from services.retriever.adapters import Embedder, Index
from services.retriever.handlers import Filters, embedding_text
from services.retriever.search import SearchResult, search
from services.retriever.settings import RetrieverSettings
from services.retriever.versions import VersionError

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

    def __init__(
        self,
        settings: RetrieverSettings,
        embedder: Embedder,
        index: Index,
        compute: ComputeThread,
        log: Any,
        *,
        metrics: RetrieverMetrics | None = None,
        pending: DurableQueue | None = None,
    ) -> None:
        self.settings = settings
        self.embedder = embedder
        self.index = index
        self.compute = compute
        self.log = log
        self.counters = Counters()
        self.model_lock = asyncio.Semaphore(1)  # the embedder uses every core it is given; two at once only thrash
        self.searches: asyncio.Queue[RetrieveRequest] = asyncio.Queue()
        self.updates: asyncio.Queue[tuple[int, IndexChunks | DeleteDocument]] = asyncio.Queue()
        """Index updates in arrival order, with their id in ``pending`` (0: not kept on disk)."""
        self.pending = pending
        """Index updates received and not yet stored, on disk: none is lost when the retriever is killed."""
        self.metrics = metrics or RetrieverMetrics()
        self.metrics.watch(self.counters)
        self.metrics.queue_depth.set_function(self.searches.qsize)
        self.metrics.holds(len(index.documents()), len(index))
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
            case KbHistoryRequest():
                await self.on_history(bus, msg)
            case KbRollbackRequest():
                await self.on_rollback(bus, msg)
            case IndexChunks() | DeleteDocument():
                await self.keep(msg)

    async def keep(self, msg: IndexChunks | DeleteDocument) -> None:
        """Queue an index update, written to disk first when there is a durable queue (the
        message is acknowledged to the broker once this returns)."""
        item = await asyncio.to_thread(self.pending.put, codec.encode(msg)) if self.pending is not None else 0
        self.updates.put_nowait((item, msg))

    async def requeue(self) -> None:
        """Queue again the updates kept on disk and not yet stored (after a crash, or cut off with
        the last connection); one stored already is found unchanged."""
        if self.pending is None:
            return
        while not self.updates.empty():
            self.updates.get_nowait()
        for item, payload in await asyncio.to_thread(self.pending.pending):
            msg = self._decode.decode(payload)
            if isinstance(msg, IndexChunks | DeleteDocument):
                self.updates.put_nowait((item, msg))
        if self.updates.qsize():
            self.log.info("resuming_updates", updates=self.updates.qsize())

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
                other_sites=found.other_sites,
                home_sites=found.home_sites,
                latency_ms=(time.perf_counter() - t) * 1000,
            )
        except Exception as exc:
            self.log.exception("search_failed", request_id=req.request_id)
            reply = RetrieveReply(request_id=req.request_id, error=f"search failed: {exc}")
        self.metrics.retrieval_seconds.observe(time.perf_counter() - t)
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
            self.metrics.indexed.labels("unchanged").inc()
            return
        try:
            async with self.model_lock:
                vectors = await self.compute.run(self.embedder.embed, [embedding_text(c.title, c.text) for c in msg.chunks])
            await asyncio.to_thread(self.index.replace, msg.doc, msg.doc_id, msg.version, msg.chunks, vectors)
        except Exception as exc:
            self.log.exception("index_failed", doc=msg.doc, request_id=msg.request_id)
            self.metrics.indexed.labels("failed").inc()
            await self._status(
                bus,
                IngestStatus(request_id=msg.request_id, doc=msg.doc, doc_id=msg.doc_id, stage="failed", reason=f"indexing failed: {exc}"),
            )
            return
        self.metrics.indexed.labels("indexed").inc()
        self.metrics.holds(len(self.index.documents()), len(self.index))
        await self._status(
            bus, IngestStatus(request_id=msg.request_id, doc=msg.doc, doc_id=msg.doc_id, stage="indexed", chunks=len(msg.chunks))
        )
        self.log.info(
            "indexed", doc=msg.doc, request_id=msg.request_id, chunks=len(msg.chunks), latency_ms=round((time.perf_counter() - t) * 1000, 1)
        )

    async def on_delete(self, bus: Bus, msg: DeleteDocument) -> None:
        """Remove a document everywhere."""
        found = await asyncio.to_thread(self.index.delete, msg.doc)
        self.metrics.holds(len(self.index.documents()), len(self.index))
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

    async def on_history(self, bus: Bus, msg: KbHistoryRequest) -> None:
        """Reply with a document's live version and the earlier ones kept."""
        kept = await asyncio.to_thread(self.index.history, msg.doc)
        found = [
            VersionInfo(version=v.version, ingested_at=v.ingested_at, chunks=v.chunks, live=v.live, replaced_at=v.replaced_at) for v in kept
        ]
        reply = KbHistoryReply(request_id=msg.request_id, doc=msg.doc, versions=found, error="" if found else f"no document {msg.doc}")
        if topics.is_valid_publish_topic(msg.reply_to):
            await bus.publish(msg.reply_to, codec.encode(reply))
        self.log.info("kb_history", request_id=msg.request_id, doc=msg.doc, versions=len(found))

    async def on_rollback(self, bus: Bus, msg: KbRollbackRequest) -> None:
        """Make an earlier version of a document live (one step: searches see the old or the new, never both)."""
        try:
            version, chunks = await asyncio.to_thread(self.index.rollback, msg.doc, msg.to or None)
            reply = KbRollbackReply(request_id=msg.request_id, doc=msg.doc, version=version, chunks=chunks)
        except VersionError as exc:
            reply = KbRollbackReply(request_id=msg.request_id, doc=msg.doc, error=str(exc))
        if topics.is_valid_publish_topic(msg.reply_to):
            await bus.publish(msg.reply_to, codec.encode(reply))
        self.log.info("kb_rollback", request_id=msg.request_id, doc=msg.doc, version=reply.version or None, error=reply.error or None)

    async def _search_worker(self, bus: Bus) -> None:
        while True:
            await self.on_search(bus, await self.searches.get())

    async def _update_worker(self, bus: Bus) -> None:
        while True:
            item, msg = await self.updates.get()
            if isinstance(msg, IndexChunks):
                await self.on_index(bus, msg)
            else:
                await self.on_delete(bus, msg)
            if item and self.pending is not None:
                await asyncio.to_thread(self.pending.done, item)

    async def consume(self, bus: Bus) -> None:
        """The dispatcher and the workers, until cancelled or the connection is lost."""
        await self.requeue()

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
            manual_ack=self.pending is not None,
        )

    async def run(self) -> None:
        """Serve until cancelled, reconnecting when the broker goes away."""
        await self.prepare()
        await run_forever(self.make_bus, self.consume, self.metrics.on_reconnect(self.log))
