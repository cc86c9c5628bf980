"""Client-side helpers used by the CLI, the tests and the benchmarks: ask a question, send documents."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import operator
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from lineside.bus import Bus, Replies
from lineside.settings import Connection
from lineside.text import MAX_DOCUMENT_BYTES
from schemas import codec, topics
from schemas.messages import (
    DeleteDocument,
    IngestPart,
    KbHistoryReply,
    KbHistoryRequest,
    KbListReply,
    KbListRequest,
    KbRollbackReply,
    KbRollbackRequest,
)

TERMINAL_STAGES = ("indexed", "unchanged", "failed", "deleted")
PIECE_BYTES = 256 * 2**10
"""Documents travel in pieces of 256 KiB: far below any broker's packet limit and cheap to redeliver,
while a 50 MiB file is still only 200 messages (each waits for the broker's PUBACK)."""


class Asker:
    """One MQTT 5 connection that asks many questions, each with its own correlation data."""

    def __init__(self, conn: Connection, *, device: str = "cli", own_topic: bool = False) -> None:
        """``own_topic``: ask on ``lineside/v1/ask/<device>`` (what a device account may write on a
        secured box) instead of the shared ``lineside/v1/ask``."""
        self.ask_topic = topics.ask_device(device) if own_topic else topics.ASK
        self.reply_topic = f"{topics.answer_device(device)}/{uuid.uuid4().hex[:12]}"
        self._bus = Bus(conn, subscriptions=(self.reply_topic, topics.stream_topic(self.reply_topic)))
        self._replies = Replies(self._bus)
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
            if m.topic == self.reply_topic:
                self._replies.deliver(m)
                continue
            on_delta = self._streams.get(m.correlation_data or b"")
            if on_delta is not None:
                is_msgpack = m.content_type == codec.MSGPACK
                on_delta(msgspec.msgpack.decode(m.payload) if is_msgpack else json.loads(m.payload))

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
        payload_obj: dict[str, Any] = {"question": question} if isinstance(question, str) else dict(question)
        if on_delta is not None:
            payload_obj["stream"] = True
        payload = msgspec.msgpack.encode(payload_obj) if msgpack else json.dumps(payload_obj, ensure_ascii=False).encode()
        corr = uuid.uuid4().hex.encode()
        if on_delta is not None:
            self._streams[corr] = on_delta
        try:
            reply = await self._replies.exchange(
                self.ask_topic,
                payload,
                corr,
                timeout_s,
                response_topic=self.reply_topic,
                content_type=codec.MSGPACK if msgpack else "application/json",
            )
        finally:
            self._streams.pop(corr, None)
        result: dict[str, Any] = msgspec.msgpack.decode(reply.payload) if msgpack else json.loads(reply.payload)
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
    piece_bytes: int = PIECE_BYTES,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Send documents to the ingest service piecewise; with ``wait``, return each one's final status event.

    A file over ``max_bytes`` is refused here from its size, before it is opened: the service would
    refuse it anyway, and a 2 GB file must not be read to learn that. Every other file travels as
    ``IngestPart`` pieces of ``piece_bytes``; ``on_progress(name, bytes_sent, size)`` is called after
    each piece. A file the service fails while it is still being sent is not sent further. Without
    ``wait`` the result holds only the files that failed before the last piece was sent.
    """
    if piece_bytes < 1:
        raise ValueError("piece_bytes must be at least 1")
    final: dict[str, dict[str, Any]] = {}
    todo: list[tuple[Path, int]] = []
    for path in paths:
        size = path.stat().st_size
        if size > max_bytes:
            reason = f"the document is {size / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.1f} MiB (LINESIDE_INGEST_MAX_DOCUMENT_MB)"
            final[path.name] = {"doc": path.name, "stage": "failed", "reason": reason}
            if on_event:
                on_event(final[path.name])
            continue
        todo.append((path, size))
    if not todo:
        return final

    names: dict[str, str] = {}
    """Request id -> file name, for every file sent (or being sent)."""
    ended: dict[str, dict[str, Any]] = {}
    """Request id -> its terminal status event."""
    sending_done = False

    async with Bus(conn, subscriptions=(topics.INGEST_STATUS,)) as bus:

        async def listen() -> None:
            """Record status events of our files; return once every sent file has a terminal one."""
            async for m in bus.messages():
                try:
                    ev = json.loads(m.payload)
                except ValueError:
                    continue
                rid = ev.get("request_id") if isinstance(ev, dict) else None
                if not isinstance(rid, str) or rid not in names or rid in ended:
                    continue
                if on_event:
                    on_event(ev)
                if ev.get("stage") in TERMINAL_STAGES:
                    ended[rid] = ev
                    if sending_done and len(ended) == len(names):
                        return

        listener = asyncio.create_task(listen())
        try:
            for path, size in todo:
                rid = uuid.uuid4().hex
                names[rid] = path.name
                unsent = await _send_pieces(
                    bus, path, size, rid, line, piece_bytes, on_progress, stopped=functools.partial(operator.contains, ended, rid)
                )
                if unsent is not None:
                    ended[rid] = {"doc": path.name, "request_id": rid, "stage": "failed", "reason": unsent}
                    if on_event:
                        on_event(ended[rid])
            sending_done = True
            if wait and len(ended) < len(names):
                try:
                    await asyncio.wait_for(listener, timeout_s)
                except TimeoutError:
                    pass
        finally:
            listener.cancel()
            try:
                await listener
            except asyncio.CancelledError:
                pass

    for rid, name in names.items():
        if rid in ended:
            final[name] = ended[rid]
        elif wait:
            final[name] = {
                "doc": name,
                "request_id": rid,
                "stage": "failed",
                "reason": f"no result within {timeout_s:g} s (is the ingest service running?)",
            }
    return final


def _sha256_of(path: Path, size: int) -> str | None:
    """Hex sha256 of the first ``size`` bytes of ``path``; None when the file no longer has ``size`` bytes."""
    h = hashlib.sha256()
    n = 0
    with path.open("rb") as f:
        while block := f.read(2**20):
            h.update(block)
            n += len(block)
    return h.hexdigest() if n == size else None


async def _send_pieces(
    bus: Bus,
    path: Path,
    size: int,
    rid: str,
    line: str | None,
    piece_bytes: int,
    on_progress: Callable[[str, int, int], None] | None,
    *,
    stopped: Callable[[], bool],
) -> str | None:
    """Publish one file as IngestPart pieces, in order; return why it could not be sent, or None.

    The file is read twice (checksum, then pieces) so memory stays at one piece whatever its size.
    """
    try:
        digest = await asyncio.to_thread(_sha256_of, path, size)
    except OSError as exc:
        return f"cannot read the file: {exc.strerror or exc}"
    if digest is None:
        return "the file changed size while it was being read: send it again once it is complete"
    total = max(1, -(-size // piece_bytes))
    sent = 0
    if on_progress and size:
        on_progress(path.name, 0, size)  # the bar appears before the first piece's round trip
    try:
        with path.open("rb") as f:
            for seq in range(total):
                if stopped():
                    return None  # the service already failed it; its status event says why
                data = await asyncio.to_thread(f.read, piece_bytes)
                part = IngestPart(request_id=rid, name=path.name, seq=seq, total=total, size=size, sha256=digest, data=data, line=line)
                await bus.publish(topics.INGEST_DOCUMENT, codec.encode(part))
                sent += len(data)
                if on_progress:
                    on_progress(path.name, sent, size)
    except OSError as exc:
        return f"cannot read the file: {exc.strerror or exc}"
    return None


async def kb_list(conn: Connection, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The documents in the knowledge base: name, version (sha256), chunks, ingested_at."""
    bus = Bus(conn)
    replies = Replies(bus)
    async with bus:
        await bus.subscribe(replies.inbox)
        pump = asyncio.create_task(replies.pump())
        try:
            msg = KbListRequest(request_id=uuid.uuid4().hex, reply_to=replies.inbox)
            reply = await replies.request(topics.KB, msg, KbListReply, timeout_s)
        finally:
            pump.cancel()
        return [msgspec.structs.asdict(d) for d in reply.documents]


async def kb_versions(conn: Connection, doc: str, *, rollback_to: str | None = None, timeout_s: float = 30.0) -> dict[str, Any]:
    """A document's versions (`kb history`), or with ``rollback_to`` (a version, a sha256 prefix,
    or "" for the newest earlier one) make that version live (`kb rollback`); the reply as a dict."""
    bus = Bus(conn)
    replies = Replies(bus)
    async with bus:
        await bus.subscribe(replies.inbox)
        pump = asyncio.create_task(replies.pump())
        try:
            rid = uuid.uuid4().hex
            if rollback_to is None:
                reply: Any = await replies.request(
                    topics.KB, KbHistoryRequest(request_id=rid, reply_to=replies.inbox, doc=doc), KbHistoryReply, timeout_s
                )
            else:
                msg = KbRollbackRequest(request_id=rid, reply_to=replies.inbox, doc=doc, to=rollback_to)
                reply = await replies.request(topics.KB, msg, KbRollbackReply, timeout_s)
        finally:
            pump.cancel()
        out: dict[str, Any] = msgspec.to_builtins(reply)
        return out


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
