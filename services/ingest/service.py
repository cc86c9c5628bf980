"""The ingest service: owns the transfers and the drop folder, one method per kind of inbound message."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from lineside.bus import Bus, Inbound, run_forever
from lineside.errors import DocumentError
from lineside.metrics import IngestMetrics
from lineside.runtime import Counters, decoded
from lineside.security.registry import list_devices
from schemas import codec, topics
from schemas.messages import ErrorInfo, IngestDocument, IngestInbox, IngestPart, IngestStatus, SourceRequest, SourceView
from services.ingest.handlers import doc_id_of, process
from services.ingest.inbox import DropFolder
from services.ingest.settings import IngestSettings
from services.ingest.sourceview import Library
from services.ingest.transfer import Assembled, Failed, Transfers


@dataclass(frozen=True, slots=True)
class Dropped:
    """A file taken from the drop folder: parsed like a sent document, then recorded as done or parked."""

    doc: IngestDocument
    path: Path


Job = IngestDocument | Assembled | Dropped
"""What the parse worker takes, one at a time in arrival order."""


class IngestService:
    """Whole documents (``IngestDocument``), piecewise ones (``IngestPart``) and files copied into the
    drop folder, parsed and chunked and handed to the retriever as ``IndexChunks``.

    Pieces are reassembled on disk as they arrive; parsing runs one document at a time on a worker
    thread so a large PDF never stalls the pieces of the next one.
    """

    def __init__(
        self, settings: IngestSettings, inbox: DropFolder, transfers: Transfers, log: Any, *, metrics: IngestMetrics | None = None
    ) -> None:
        self.settings = settings
        self.inbox = inbox
        self.transfers = transfers
        self.log = log
        self.counters = Counters()
        # One limit for every way in: a document sent whole, piecewise or dropped in the folder.
        self.max_bytes = transfers.max_bytes
        # Checked every second (or 4x per stall period if shorter): a stalled transfer fails at most one period late.
        self.expire_every_s = min(1.0, settings.transfer_stall_s / 4)
        self.jobs: asyncio.Queue[Job] = asyncio.Queue()
        self.pending: set[str] = set()  # drop-folder file names queued or being parsed
        self._decode = codec.decoder(IngestInbox)
        self.metrics = metrics or IngestMetrics()
        self.metrics.watch(self.counters)
        self.metrics.queue_depth.set_function(lambda: self.jobs.qsize())  # the queue is replaced on each connection
        self._json = msgspec.json.Encoder()
        self.library = Library(Path(settings.data_dir) / "documents")
        """The documents as ingested, shown to devices on ``lineside/v1/source/<device>`` (the web page)."""

    def prepare(self) -> None:
        """Empty the spool: transfers of an earlier run cannot be resumed."""
        leftovers = self.transfers.clear()
        if leftovers:
            self.log.info("spool_cleared", files=leftovers, reason="transfers of an earlier run cannot be resumed")

    async def _status(self, bus: Bus, st: IngestStatus) -> None:
        await bus.publish(topics.INGEST_STATUS, self._json.encode(st))

    async def on_message(self, bus: Bus, msg: IngestInbox) -> None:
        """Dispatch one inbound message by its type."""
        match msg:
            case IngestDocument():
                self.jobs.put_nowait(msg)
            case IngestPart():
                await self.on_part(bus, msg)

    async def on_part(self, bus: Bus, part: IngestPart) -> None:
        """Add one piece to its transfer; a finished transfer is announced and queued for parsing."""
        outcome = await asyncio.to_thread(self.transfers.accept, part)
        if isinstance(outcome, Failed):
            await self.on_failed(bus, outcome)
        elif isinstance(outcome, Assembled):
            self.log.info(
                "transfer_received",
                doc=outcome.name,
                request_id=outcome.request_id,
                bytes=outcome.size,
                pieces=outcome.pieces,
                duplicates=outcome.duplicates,
            )
            await self._status(bus, IngestStatus(request_id=outcome.request_id, doc=outcome.name, stage="received"))
            self.jobs.put_nowait(outcome)

    async def on_failed(self, bus: Bus, f: Failed) -> None:
        """Report a piecewise transfer that was refused, broke or stalled."""
        self.counters.inc("failed")
        self.metrics.documents.labels("failed").inc()
        self.log.warning("ingest_failed", doc=f.name, request_id=f.request_id, reason=f.reason, source="pieces")
        await self._status(bus, IngestStatus(request_id=f.request_id, doc=f.name, stage="failed", reason=f.reason))

    async def on_document(self, bus: Bus, doc: IngestDocument, *, announce: bool = True) -> str | None:
        """Parse one document and hand its chunks on; return why it failed, or None.

        ``announce`` publishes ``received`` first; a piecewise document announced it on its last piece.
        """
        t = time.perf_counter()
        if announce:
            await self._status(bus, IngestStatus(request_id=doc.request_id, doc=doc.name, stage="received"))
        try:
            msg = await asyncio.to_thread(process, doc, self.max_bytes)
        except DocumentError as exc:
            self.counters.inc("failed")
            self.metrics.documents.labels("failed").inc()
            self.log.warning("ingest_failed", doc=doc.name, request_id=doc.request_id, reason=exc.reason)
            await self._status(bus, IngestStatus(request_id=doc.request_id, doc=doc.name, stage="failed", reason=exc.reason))
            return exc.reason
        except Exception as exc:  # a parser bug must not take the service down with the batch
            self.counters.inc("failed")
            self.metrics.documents.labels("failed").inc()
            self.log.exception("ingest_crashed", doc=doc.name, request_id=doc.request_id)
            reason = f"could not parse: {type(exc).__name__}: {exc}"
            await self._status(bus, IngestStatus(request_id=doc.request_id, doc=doc.name, stage="failed", reason=reason))
            return reason
        await bus.publish(topics.INDEX, codec.encode(msg))
        # Handed on: from now on the retriever reports it. Killed before this line, the next start reports it failed.
        await asyncio.to_thread(self.transfers.handed_on, doc.request_id)
        try:
            await asyncio.to_thread(self.library.save, doc.name, doc.content)
        except OSError as exc:  # the document is indexed all the same; only its page view is missing
            self.log.warning("document_not_kept", doc=doc.name, reason=str(exc))
        self.metrics.documents.labels("parsed").inc()
        self.metrics.chunks.inc(len(msg.chunks))
        await self._status(
            bus, IngestStatus(request_id=doc.request_id, doc=doc.name, doc_id=doc_id_of(doc.name), stage="parsed", chunks=len(msg.chunks))
        )
        self.log.info(
            "parsed", doc=doc.name, request_id=doc.request_id, chunks=len(msg.chunks), latency_ms=round((time.perf_counter() - t) * 1000, 1)
        )
        return None

    async def on_assembled(self, bus: Bus, a: Assembled) -> None:
        """Parse a reassembled document from its spool file, then remove the file and the transfer's record."""
        try:
            try:
                content = await asyncio.to_thread(a.path.read_bytes)
            except OSError as exc:
                await self.on_failed(bus, Failed(request_id=a.request_id, name=a.name, reason=f"could not read the spool file: {exc}"))
                content = None
            finally:
                a.path.unlink(missing_ok=True)
            if content is not None:
                doc = IngestDocument(request_id=a.request_id, name=a.name, content=content, sha256=a.sha256, line=a.line)
                await self.on_document(bus, doc, announce=False)
        except asyncio.CancelledError:
            # The connection was lost in the middle: say so on the next one (the record stays until then).
            if self.transfers.unfinished(a.request_id):
                reason = "the ingest service lost its broker connection while parsing this document: send it again"
                self.transfers.interrupted.append(Failed(request_id=a.request_id, name=a.name, reason=reason))
            raise
        await asyncio.to_thread(self.transfers.handed_on, a.request_id)  # handed on or reported failed

    async def on_dropped(self, bus: Bus, job: Dropped) -> None:
        """Parse a drop-folder file, then record it as ingested or park it in inbox/failed with the reason."""
        reason = await self.on_document(bus, job.doc)
        if reason is None:
            self.inbox.mark_done(job.doc.name, job.doc.sha256)
        else:
            self.inbox.mark_failed(job.path, reason)
        self.pending.discard(job.path.name)

    async def on_file(self, path: Path) -> None:
        """Queue one drop-folder file that finished arriving, unless it is too large, queued or already ingested."""
        if path.name in self.pending:
            return
        size = (await asyncio.to_thread(path.stat)).st_size
        if size > self.max_bytes:
            reason = f"the document is {size / 2**20:.1f} MiB; the limit is {self.max_bytes / 2**20:.1f} MiB"
            self.log.warning("ingest_failed", doc=path.name, reason=reason, source="inbox")
            await asyncio.to_thread(self.inbox.mark_failed, path, reason)
            return
        data = await asyncio.to_thread(path.read_bytes)
        sha = hashlib.sha256(data).hexdigest()
        if self.inbox.is_done(path.name, sha):
            return
        self.pending.add(path.name)
        self.jobs.put_nowait(Dropped(IngestDocument(request_id=uuid.uuid4().hex, name=path.name, content=data, sha256=sha), path))

    async def on_source(self, bus: Bus, device: str, payload: bytes) -> None:
        """A device asks to see a source of an answer (or its own line): reply under its answers."""
        t = time.perf_counter()
        try:
            req = msgspec.json.decode(payload, type=SourceRequest)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            error = ErrorInfo(code="invalid_request", message=f"send JSON with doc and locator: {exc}")
            view = SourceView(request_id="", doc="", locator="", kind="error", error=error)
        else:
            rid = req.request_id or uuid.uuid4().hex
            if req.what == "device":
                account = next((a for a in await asyncio.to_thread(list_devices, Path(self.settings.data_dir)) if a.name == device), None)
                line, role = ((account.line or ""), account.role) if account else ("", "device")
                view = SourceView(request_id=rid, doc="", locator="", kind="device", line=line, role=role)
            else:
                view = await asyncio.to_thread(self.library.view, req, rid)
        await bus.publish(topics.source_reply(device), self._json.encode(view))
        self.log.info(
            "source",
            device=device,
            doc=view.doc,
            locator=view.locator,
            kind=view.kind,
            latency_ms=round((time.perf_counter() - t) * 1000, 1),
        )

    async def _dispatch(self, bus: Bus) -> None:
        async def documents() -> AsyncIterator[Inbound]:
            async for m in bus.messages():
                device = topics.device_of_source(m.topic)
                if device is None:
                    yield m
                else:
                    await self.on_source(bus, device, m.payload)

        async for msg in decoded(documents(), self._decode, self.counters, self.log):
            await self.on_message(bus, msg)

    async def _parse_worker(self, bus: Bus) -> None:
        while True:
            job = await self.jobs.get()
            match job:
                case Assembled():
                    await self.on_assembled(bus, job)
                case Dropped():
                    await self.on_dropped(bus, job)
                case IngestDocument():
                    await self.on_document(bus, job)

    async def _watch_inbox(self) -> None:
        while True:
            for path in await asyncio.to_thread(self.inbox.ready):
                await self.on_file(path)
            await asyncio.sleep(self.settings.inbox_poll_s)

    async def _expire_worker(self, bus: Bus) -> None:
        while True:
            await asyncio.sleep(self.expire_every_s)
            for f in await asyncio.to_thread(self.transfers.expire):
                await self.on_failed(bus, f)

    async def consume(self, bus: Bus) -> None:
        """The dispatcher, the parse worker, the drop-folder watcher and the stall timer, until cancelled or the connection is lost."""
        # Each connection starts with a new queue. Documents sent to us keep their place in it (their
        # spool files are there); drop-folder files are found again by the next scan, as nothing is pending.
        old, self.jobs = self.jobs, asyncio.Queue()
        while not old.empty():
            job = old.get_nowait()
            if not isinstance(job, Dropped):
                self.jobs.put_nowait(job)
        self.pending = set()
        self.transfers.touch()  # pieces the broker kept for us while we were away are still coming
        while self.transfers.interrupted:  # taken by an earlier run or connection and never finished: tell their senders
            await self.on_failed(bus, self.transfers.interrupted[0])
            await asyncio.to_thread(self.transfers.handed_on, self.transfers.interrupted.pop(0).request_id)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._dispatch(bus), name="dispatch")
            tg.create_task(self._parse_worker(bus), name="parse")
            tg.create_task(self._watch_inbox(), name="inbox")
            tg.create_task(self._expire_worker(bus), name="expire")

    def make_bus(self) -> Bus:
        """The service's connection: persistent session, the document inbox."""
        return Bus(
            self.settings,
            client_id=self.settings.client_id,
            service="ingest",
            subscriptions=(topics.INGEST_DOCUMENT, topics.SOURCE_FILTER),
            persistent=True,
        )

    async def run(self) -> None:
        """Serve until cancelled, reconnecting when the broker goes away."""
        self.prepare()
        await run_forever(self.make_bus, self.consume, self.metrics.on_reconnect(self.log))
