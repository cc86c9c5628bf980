"""Ingest wiring: receive documents over MQTT (whole or piecewise), parse and chunk them, hand the chunks to the retriever."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from pathlib import Path

import msgspec

from lineside.bus import Bus, run_forever
from lineside.errors import DocumentError
from lineside.log import configure
from lineside.runtime import Counters, decoded, run
from lineside.settings import load
from schemas import codec, topics
from schemas.messages import IngestDocument, IngestInbox, IngestPart, IngestStatus
from services.ingest.handlers import doc_id_of, process
from services.ingest.inbox import DropFolder
from services.ingest.settings import IngestSettings
from services.ingest.transfer import Assembled, Failed, Transfers


async def main() -> None:
    """Serve ingest requests until cancelled."""
    s = load(IngestSettings, "LINESIDE_INGEST_")
    log = configure("ingest")
    decode = codec.decoder(IngestInbox)
    json_enc = msgspec.json.Encoder()
    counters = Counters()
    max_bytes = int(s.max_document_mb * 2**20)
    inbox = DropFolder(Path(s.data_dir) / "inbox")
    transfers = Transfers(
        Path(s.data_dir) / "ingest" / "spool", max_bytes=max_bytes, stall_s=s.transfer_stall_s, max_active=s.max_transfers
    )
    leftovers = transfers.clear()
    if leftovers:
        log.info("spool_cleared", files=leftovers, reason="transfers of an earlier run cannot be resumed")
    # Checked every second (or 4x per stall period if shorter): a stalled transfer fails at most one period late.
    expire_every_s = min(1.0, s.transfer_stall_s / 4)

    async def status(bus: Bus, st: IngestStatus) -> None:
        await bus.publish(topics.INGEST_STATUS, json_enc.encode(st))

    async def handle(bus: Bus, doc: IngestDocument, *, announce: bool = True) -> str | None:
        """Parse one document and hand its chunks on; return why it failed, or None.

        ``announce`` publishes ``received`` first; a piecewise document announced it on its last piece.
        """
        t = time.perf_counter()
        if announce:
            await status(bus, IngestStatus(request_id=doc.request_id, doc=doc.name, stage="received"))
        try:
            msg = await asyncio.to_thread(process, doc, max_bytes)
        except DocumentError as exc:
            counters.inc("failed")
            log.warning("ingest_failed", doc=doc.name, request_id=doc.request_id, reason=exc.reason)
            await status(bus, IngestStatus(request_id=doc.request_id, doc=doc.name, stage="failed", reason=exc.reason))
            return exc.reason
        except Exception as exc:  # a parser bug must not take the service down with the batch
            counters.inc("failed")
            log.exception("ingest_crashed", doc=doc.name, request_id=doc.request_id)
            reason = f"could not parse: {type(exc).__name__}: {exc}"
            await status(bus, IngestStatus(request_id=doc.request_id, doc=doc.name, stage="failed", reason=reason))
            return reason
        await bus.publish(topics.INDEX, codec.encode(msg))
        await status(
            bus, IngestStatus(request_id=doc.request_id, doc=doc.name, doc_id=doc_id_of(doc.name), stage="parsed", chunks=len(msg.chunks))
        )
        log.info(
            "parsed", doc=doc.name, request_id=doc.request_id, chunks=len(msg.chunks), latency_ms=round((time.perf_counter() - t) * 1000, 1)
        )
        return None

    async def transfer_failed(bus: Bus, f: Failed) -> None:
        counters.inc("failed")
        log.warning("ingest_failed", doc=f.name, request_id=f.request_id, reason=f.reason, source="pieces")
        await status(bus, IngestStatus(request_id=f.request_id, doc=f.name, stage="failed", reason=f.reason))

    async def handle_assembled(bus: Bus, a: Assembled) -> None:
        """Parse a reassembled document from its spool file, then remove the file."""
        try:
            content = await asyncio.to_thread(a.path.read_bytes)
        except OSError as exc:
            await transfer_failed(bus, Failed(request_id=a.request_id, name=a.name, reason=f"could not read the spool file: {exc}"))
            return
        finally:
            a.path.unlink(missing_ok=True)
        await handle(
            bus, IngestDocument(request_id=a.request_id, name=a.name, content=content, sha256=a.sha256, line=a.line), announce=False
        )

    async def consume(bus: Bus) -> None:
        queue: asyncio.Queue[tuple[IngestDocument | Assembled, Path | None]] = asyncio.Queue()
        transfers.touch()  # pieces the broker kept for us while we were away are still coming

        async def dispatch() -> None:
            async for msg in decoded(bus.messages(), decode, counters, log):
                if not isinstance(msg, IngestPart):
                    queue.put_nowait((msg, None))
                    continue
                outcome = await asyncio.to_thread(transfers.accept, msg)
                if isinstance(outcome, Failed):
                    await transfer_failed(bus, outcome)
                elif isinstance(outcome, Assembled):
                    log.info(
                        "transfer_received",
                        doc=outcome.name,
                        request_id=outcome.request_id,
                        bytes=outcome.size,
                        pieces=outcome.pieces,
                        duplicates=outcome.duplicates,
                    )
                    await status(bus, IngestStatus(request_id=outcome.request_id, doc=outcome.name, stage="received"))
                    queue.put_nowait((outcome, None))

        async def expire() -> None:
            while True:
                await asyncio.sleep(expire_every_s)
                for f in await asyncio.to_thread(transfers.expire):
                    await transfer_failed(bus, f)

        async def worker() -> None:
            while True:
                doc, path = await queue.get()
                if isinstance(doc, Assembled):
                    await handle_assembled(bus, doc)
                    continue
                reason = await handle(bus, doc)
                if path is None:
                    continue
                if reason is None:
                    inbox.mark_done(doc.name, doc.sha256)
                else:
                    inbox.mark_failed(path, reason)
                pending.discard(path.name)

        async def watch_inbox() -> None:
            while True:
                for path in await asyncio.to_thread(inbox.ready):
                    if path.name in pending:
                        continue
                    size = path.stat().st_size
                    if size > max_bytes:
                        reason = f"the document is {size / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.1f} MiB"
                        log.warning("ingest_failed", doc=path.name, reason=reason, source="inbox")
                        await asyncio.to_thread(inbox.mark_failed, path, reason)
                        continue
                    data = await asyncio.to_thread(path.read_bytes)
                    sha = hashlib.sha256(data).hexdigest()
                    if inbox.is_done(path.name, sha):
                        continue
                    pending.add(path.name)
                    queue.put_nowait((IngestDocument(request_id=uuid.uuid4().hex, name=path.name, content=data, sha256=sha), path))
                await asyncio.sleep(s.inbox_poll_s)

        pending: set[str] = set()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(dispatch(), name="dispatch")
            tg.create_task(worker(), name="parse")
            tg.create_task(watch_inbox(), name="inbox")
            tg.create_task(expire(), name="expire")

    def make_bus() -> Bus:
        return Bus(s, client_id=s.client_id, service="ingest", subscriptions=(topics.INGEST_DOCUMENT,), persistent=True)

    try:
        await run_forever(make_bus, consume, lambda err, wait: log.warning("reconnecting", error=err, wait_s=round(wait, 2)))
    finally:
        transfers.close()


if __name__ == "__main__":
    run(main)
