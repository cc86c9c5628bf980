"""Ingest wiring: receive documents over MQTT, parse and chunk them, hand the chunks to the retriever."""

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
from schemas.messages import IngestDocument, IngestInbox, IngestStatus
from services.ingest.handlers import doc_id_of, process
from services.ingest.inbox import DropFolder
from services.ingest.settings import IngestSettings


async def main() -> None:
    """Serve ingest requests until cancelled."""
    s = load(IngestSettings, "LINESIDE_INGEST_")
    log = configure("ingest")
    decode = codec.decoder(IngestInbox)
    json_enc = msgspec.json.Encoder()
    counters = Counters()
    max_bytes = int(s.max_document_mb * 2**20)
    inbox = DropFolder(Path(s.data_dir) / "inbox")

    async def status(bus: Bus, st: IngestStatus) -> None:
        await bus.publish(topics.INGEST_STATUS, json_enc.encode(st))

    async def handle(bus: Bus, doc: IngestDocument) -> str | None:
        """Parse one document and hand its chunks on; return why it failed, or None."""
        t = time.perf_counter()
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

    async def consume(bus: Bus) -> None:
        queue: asyncio.Queue[tuple[IngestDocument, Path | None]] = asyncio.Queue()

        async def dispatch() -> None:
            async for doc in decoded(bus.messages(), decode, counters, log):
                queue.put_nowait((doc, None))

        async def worker() -> None:
            while True:
                doc, path = await queue.get()
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

    def make_bus() -> Bus:
        return Bus(s, client_id=s.client_id, service="ingest", subscriptions=(topics.INGEST_DOCUMENT,), persistent=True)

    await run_forever(make_bus, consume, lambda err, wait: log.warning("reconnecting", error=err, wait_s=round(wait, 2)))


if __name__ == "__main__":
    run(main)
