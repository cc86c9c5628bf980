"""Client-side helpers used by the CLI, the tests and the benchmarks: ask a question, send documents."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from lineside.bus import Bus
from lineside.settings import Connection
from schemas import codec, topics
from schemas.messages import DeleteDocument, IngestDocument, KbListReply, KbListRequest

TERMINAL_STAGES = ("indexed", "unchanged", "failed", "deleted")
MAX_DOCUMENT_BYTES = 50 * 2**20
"""Same as the ingest service's default limit, and below the broker's 64 MiB packet limit."""


class Asker:
    """One MQTT 5 connection that asks many questions, each with its own correlation data."""

    def __init__(self, conn: Connection, *, device: str = "cli") -> None:
        self.reply_topic = f"{topics.answer_device(device)}/{uuid.uuid4().hex[:12]}"
        self._bus = Bus(conn, subscriptions=(self.reply_topic, topics.stream_topic(self.reply_topic)))
        self._waiting: dict[bytes, asyncio.Future[tuple[bytes, str | None]]] = {}
        self._streams: dict[bytes, Callable[[dict[str, Any]], None]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Asker:
        await self._bus.__aenter__()
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader:
            self._reader.cancel()
        await self._bus.__aexit__(None, None, None)

    async def _read(self) -> None:
        async for m in self._bus.messages():
            if m.topic != self.reply_topic:
                on_delta = self._streams.get(m.correlation_data or b"")
                if on_delta is not None:
                    is_msgpack = m.content_type == codec.MSGPACK
                    on_delta(msgspec.msgpack.decode(m.payload) if is_msgpack else json.loads(m.payload))
                continue
            fut = self._waiting.pop(m.correlation_data or b"", None)
            if fut is not None and not fut.done():
                fut.set_result((m.payload, m.content_type))

    async def ask(
        self,
        question: str | dict[str, Any],
        *,
        timeout_s: float = 120.0,
        msgpack: bool = False,
        on_delta: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Ask and wait for the answer with the same correlation data.

        With ``on_delta`` the question asks for a stream, and each partial-answer message
        (``{request_id, seq, delta[, final]}``) is passed to it as it arrives.
        """
        payload_obj = {"question": question} if isinstance(question, str) else dict(question)
        if on_delta is not None:
            payload_obj["stream"] = True
        payload = msgspec.msgpack.encode(payload_obj) if msgpack else json.dumps(payload_obj, ensure_ascii=False).encode()
        corr = uuid.uuid4().hex.encode()
        fut: asyncio.Future[tuple[bytes, str | None]] = asyncio.get_running_loop().create_future()
        self._waiting[corr] = fut
        if on_delta is not None:
            self._streams[corr] = on_delta
        try:
            await self._bus.publish(
                topics.ASK,
                payload,
                response_topic=self.reply_topic,
                correlation_data=corr,
                content_type=codec.MSGPACK if msgpack else "application/json",
            )
            body, _ = await asyncio.wait_for(fut, timeout_s)
        finally:
            self._waiting.pop(corr, None)
            self._streams.pop(corr, None)
        result: dict[str, Any] = msgspec.msgpack.decode(body) if msgpack else json.loads(body)
        return result


async def ask(
    conn: Connection,
    question: str | dict[str, Any],
    *,
    device: str = "cli",
    timeout_s: float = 120.0,
    msgpack: bool = False,
    on_delta: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Ask one question over the MQTT 5 request/response path and return the decoded answer."""
    async with Asker(conn, device=device) as asker:
        return await asker.ask(question, timeout_s=timeout_s, msgpack=msgpack, on_delta=on_delta)


async def ingest(
    conn: Connection,
    paths: Sequence[Path],
    *,
    wait: bool = True,
    timeout_s: float = 600.0,
    line: str | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    max_bytes: int = MAX_DOCUMENT_BYTES,
) -> dict[str, dict[str, Any]]:
    """Send documents to the ingest service; with ``wait``, return each one's final status event.

    A file over ``max_bytes`` is refused here, before it is read: it would be refused by the
    service anyway, and a 2 GB file must not be loaded into memory to learn that.
    """
    ids = {}
    refused: dict[str, dict[str, Any]] = {}
    async with Bus(conn, subscriptions=(topics.INGEST_STATUS,) if wait else ()) as bus:
        for path in paths:
            size = path.stat().st_size
            if size > max_bytes:
                refused[path.name] = {
                    "doc": path.name,
                    "stage": "failed",
                    "reason": f"the document is {size / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.1f} MiB",
                }
                if on_event:
                    on_event(refused[path.name])
                continue
            data = path.read_bytes()
            rid = uuid.uuid4().hex
            ids[rid] = path.name
            doc = IngestDocument(request_id=rid, name=path.name, content=data, sha256=hashlib.sha256(data).hexdigest(), line=line)
            await bus.publish(topics.INGEST_DOCUMENT, codec.encode(doc))
        if not wait or not ids:
            return refused
        final: dict[str, dict[str, Any]] = dict(refused)

        async def collect() -> None:
            async for m in bus.messages():
                try:
                    ev = json.loads(m.payload)
                except ValueError:
                    continue
                if ev.get("request_id") not in ids:
                    continue
                if on_event:
                    on_event(ev)
                if ev.get("stage") in TERMINAL_STAGES:
                    final[ids[ev["request_id"]]] = ev
                    if len(final) == len(ids) + len(refused):
                        return

        try:
            await asyncio.wait_for(collect(), timeout_s)
        except TimeoutError:
            for rid, name in ids.items():
                final.setdefault(
                    name,
                    {
                        "doc": name,
                        "request_id": rid,
                        "stage": "failed",
                        "reason": f"no result within {timeout_s:g} s (is the ingest service running?)",
                    },
                )
        return final


async def kb_list(conn: Connection, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The documents in the knowledge base: name, version (sha256), chunks, ingested_at."""
    bus = Bus(conn)
    inbox = topics.reply_inbox(bus.client_id)
    rid = uuid.uuid4().hex
    async with bus:
        await bus.subscribe(inbox)
        await bus.publish(topics.KB, codec.encode(KbListRequest(request_id=rid, reply_to=inbox)))

        async def first() -> list[dict[str, Any]]:
            async for m in bus.messages():
                reply = msgspec.msgpack.decode(m.payload, type=KbListReply)
                if reply.request_id == rid:
                    return [msgspec.structs.asdict(d) for d in reply.documents]
            return []

        return await asyncio.wait_for(first(), timeout_s)


async def kb_delete(conn: Connection, doc: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """Remove a document everywhere; returns its final status event (stage 'deleted' or 'failed')."""
    rid = uuid.uuid4().hex
    async with Bus(conn, subscriptions=(topics.INGEST_STATUS,)) as bus:
        await bus.publish(topics.INDEX, codec.encode(DeleteDocument(request_id=rid, doc=doc)))

        async def first() -> dict[str, Any]:
            async for m in bus.messages():
                ev: dict[str, Any] = json.loads(m.payload)
                if ev.get("request_id") == rid and ev.get("stage") in TERMINAL_STAGES:
                    return ev
            return {}

        return await asyncio.wait_for(first(), timeout_s)


async def wait_online(conn: Connection, services: Sequence[str], timeout_s: float) -> set[str]:
    """Wait until every service's retained status is 'online'; return those that are."""
    online: set[str] = set()
    async with Bus(conn, subscriptions=(topics.STATUS_ALL,)) as bus:

        async def watch() -> None:
            async for m in bus.messages():
                name = m.topic.rsplit("/", 1)[-1]
                if m.payload == b"online":
                    online.add(name)
                else:
                    online.discard(name)
                if online >= set(services):
                    return

        deadline = time.monotonic() + timeout_s
        try:
            await asyncio.wait_for(watch(), max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            pass
    return online
