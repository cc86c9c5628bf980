"""Client-side helpers used by the CLI, the tests and the benchmarks: ask a question, send documents."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import operator
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from lineside.bus import Bus, BusError, Inbound, Replies
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


ASK_SESSION_EXPIRY_S = 600
"""How long the broker keeps an asking CLI's session (its reply subscription and the answers queued
on it) after the connection is lost: longer than a broker restart, short enough that the sessions
of finished `lineside ask` runs do not pile up."""

PUBLISH_TIMEOUT_S = 5.0
"""A question not acknowledged (PUBACK) within this is taken as not received and sent again (on the
next connection when this one is lost); a local broker acknowledges within milliseconds."""

RECONNECT_FIRST_S = 0.25
RECONNECT_MAX_S = 5.0
"""Reconnect backoff of an asking client: a restarted local broker is back within a second or two,
and a question has a deadline, so the wait between tries stays short."""


@dataclass(slots=True)
class _Question:
    """A question waiting for its answer: what to send again after a reconnect, and the answer's future."""

    payload: bytes
    content_type: str
    answer: asyncio.Future[Inbound]
    acked: bool = False


def _taken_over(exc: BaseException) -> bool:
    """True when the broker closed the connection because another client connected with the same client id."""
    seen: BaseException | None = exc
    while seen is not None:
        if "taken over" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class Asker:
    """One MQTT 5 connection that asks many questions, each with its own correlation data.

    It survives a broker restart: it reconnects with backoff, subscribes its reply topic again,
    and sends again every question not answered yet, with the same correlation data (the gateway
    answers a device and request id once, so a copy it already has is dropped). On the local
    listener its session persists for ``ASK_SESSION_EXPIRY_S``, so an answer published while it
    was away is kept for it; over TLS (a secured box, where the broker makes the account name the
    client id) the session is clean: a persistent one would be shared by every client of that account.
    """

    def __init__(self, conn: Connection, *, device: str = "cli", own_topic: bool = False) -> None:
        """``own_topic``: ask on ``lineside/v1/ask/<device>`` (what a device account may write on a
        secured box) instead of the shared ``lineside/v1/ask``."""
        self.ask_topic = topics.ask_device(device) if own_topic else topics.ASK
        self.reply_topic = f"{topics.answer_device(device)}/{uuid.uuid4().hex[:12]}"
        self._conn = conn
        self._client_id = f"lineside-cli-{uuid.uuid4().hex[:12]}"
        self._bus: Bus | None = None
        self._online = asyncio.Event()
        self._questions: dict[bytes, _Question] = {}
        self._streams: dict[bytes, Callable[[dict[str, Any]], None]] = {}
        self._runner: asyncio.Task[None] | None = None
        self._resends: set[asyncio.Task[None]] = set()
        self._broken: BusError | None = None
        self.reconnects = 0
        """How many times the connection was lost and made again."""
        self.stray = 0
        """Answers that matched no waiting question (a second copy, or one after its question timed out)."""

    def _make_bus(self) -> Bus:
        return Bus(
            self._conn,
            client_id=self._client_id,
            subscriptions=(self.reply_topic, topics.stream_topic(self.reply_topic)),
            persistent=not self._conn.mqtt_tls,
            session_expiry_s=ASK_SESSION_EXPIRY_S,
        )

    async def __aenter__(self) -> Asker:
        bus = self._make_bus()
        await bus.__aenter__()  # a broker that is not there at the start is the user's error to see
        self._bus = bus
        self._online.set()
        self._runner = asyncio.create_task(self._run(bus))
        return self

    async def __aexit__(self, *exc: object) -> None:
        tasks = [t for t in (self._runner, *self._resends) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._bus is not None:
            await self._bus.__aexit__(None, None, None)
            self._bus = None

    async def _run(self, bus: Bus) -> None:
        """Read answers; when the connection is lost, connect again and send the unanswered questions again."""
        while True:
            try:
                await self._read(bus)
                return
            except BusError as exc:
                lost = exc
            self._online.clear()
            self._bus = None
            try:
                await asyncio.wait_for(bus.__aexit__(None, None, None), PUBLISH_TIMEOUT_S)
            except TimeoutError:
                pass  # the connection is gone either way
            if _taken_over(lost):
                self._broken = BusError(
                    f"the broker closed this connection: another client connected with the same client id ({lost}); "
                    "over TLS the client id is the account name, so use one account per asking client"
                )
                for q in self._questions.values():
                    if not q.answer.done():
                        q.answer.set_exception(self._broken)
                return
            bus = await self._reconnect()
            self.reconnects += 1
            self._bus = bus
            self._online.set()
            for corr, q in list(self._questions.items()):
                if q.acked and not q.answer.done():  # the others are still being sent by their ask()
                    task = asyncio.create_task(self._send(corr, q))
                    self._resends.add(task)
                    task.add_done_callback(self._resends.discard)

    async def _reconnect(self) -> Bus:
        delay = RECONNECT_FIRST_S
        while True:
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, RECONNECT_MAX_S)
            bus = self._make_bus()
            try:
                await bus.__aenter__()
            except BusError:
                continue
            return bus

    async def _read(self, bus: Bus) -> None:
        async for m in bus.messages():
            if m.topic == self.reply_topic:
                q = self._questions.get(m.correlation_data or b"")
                if q is None or q.answer.done():
                    self.stray += 1
                else:
                    q.answer.set_result(m)
                continue
            on_delta = self._streams.get(m.correlation_data or b"")
            if on_delta is not None:
                is_msgpack = m.content_type == codec.MSGPACK
                on_delta(msgspec.msgpack.decode(m.payload) if is_msgpack else json.loads(m.payload))

    async def _send(self, corr: bytes, q: _Question) -> None:
        """Publish a question until the broker acknowledges it, connection after connection."""
        while True:
            if self._broken is not None:
                raise self._broken
            await self._online.wait()
            bus = self._bus
            if bus is None:
                continue
            try:
                await asyncio.wait_for(
                    bus.publish(
                        self.ask_topic, q.payload, correlation_data=corr, response_topic=self.reply_topic, content_type=q.content_type
                    ),
                    PUBLISH_TIMEOUT_S,
                )
            except (BusError, TimeoutError):
                if bus is self._bus:
                    await asyncio.sleep(0.1)  # the reader notices the lost connection and clears _online
                continue
            q.acked = True
            return

    async def ask(
        self,
        question: str | dict[str, Any],
        *,
        timeout_s: float = 120.0,
        msgpack: bool = False,
        on_delta: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Ask and wait for the answer with the same correlation data; TimeoutError after ``timeout_s``.

        With ``on_delta`` the question asks for a stream, and each partial-answer message
        (``{request_id, seq, delta[, final]}``) is passed to it as it arrives.
        """
        payload_obj: dict[str, Any] = {"question": question} if isinstance(question, str) else dict(question)
        if on_delta is not None:
            payload_obj["stream"] = True
        payload = msgspec.msgpack.encode(payload_obj) if msgpack else json.dumps(payload_obj, ensure_ascii=False).encode()
        corr = uuid.uuid4().hex.encode()
        q = _Question(payload, codec.MSGPACK if msgpack else "application/json", asyncio.get_running_loop().create_future())
        self._questions[corr] = q
        if on_delta is not None:
            self._streams[corr] = on_delta
        try:
            async with asyncio.timeout(timeout_s):
                await self._send(corr, q)
                reply = await q.answer
        finally:
            self._questions.pop(corr, None)
            self._streams.pop(corr, None)
            if q.answer.done() and not q.answer.cancelled():
                q.answer.exception()  # seen: a lost connection may fail it just as its waiter times out
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
    restarts = 0
    """How many times the ingest service went offline while this batch was under way."""

    async with Bus(conn, subscriptions=(topics.INGEST_STATUS, topics.status("ingest"))) as bus:

        async def listen() -> None:
            """Record status events of our files; return once every sent file has a terminal one."""
            nonlocal restarts
            seen_online = False
            async for m in bus.messages():
                if m.topic == topics.status("ingest"):
                    if m.payload == b"online":
                        seen_online = True
                    elif seen_online:  # not the retained status of a service that was down before we began
                        restarts += 1
                    continue
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
            why = "the ingest service restarted during the batch" if restarts else "is the ingest service running?"
            final[name] = {
                "doc": name,
                "request_id": rid,
                "stage": "failed",
                "reason": f"no result within {timeout_s:g} s ({why}): send it again",
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


R = TypeVar("R")


async def request_once(
    conn: Connection, topic: str, make: Callable[[str, str], msgspec.Struct], reply_type: type[R], timeout_s: float
) -> R:
    """One internal request over a connection of its own: ``make(request_id, reply_to)`` builds the
    message; its ``reply_type`` answer, TimeoutError after ``timeout_s``."""
    bus = Bus(conn)
    replies = Replies(bus)
    async with bus:
        await bus.subscribe(replies.inbox)
        pump = asyncio.create_task(replies.pump())
        try:
            return await replies.request(topic, make(uuid.uuid4().hex, replies.inbox), reply_type, timeout_s)
        finally:
            pump.cancel()


async def kb_list(conn: Connection, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The documents in the knowledge base: name, version (sha256), chunks, ingested_at."""
    reply = await request_once(conn, topics.KB, lambda rid, inbox: KbListRequest(request_id=rid, reply_to=inbox), KbListReply, timeout_s)
    return [msgspec.structs.asdict(d) for d in reply.documents]


async def kb_versions(conn: Connection, doc: str, *, rollback_to: str | None = None, timeout_s: float = 30.0) -> dict[str, Any]:
    """A document's versions (`kb history`), or with ``rollback_to`` (a version, a sha256 prefix,
    or "" for the newest earlier one) make that version live (`kb rollback`); the reply as a dict."""
    reply: KbHistoryReply | KbRollbackReply
    if rollback_to is None:
        reply = await request_once(
            conn, topics.KB, lambda rid, inbox: KbHistoryRequest(request_id=rid, reply_to=inbox, doc=doc), KbHistoryReply, timeout_s
        )
    else:
        reply = await request_once(
            conn,
            topics.KB,
            lambda rid, inbox: KbRollbackRequest(request_id=rid, reply_to=inbox, doc=doc, to=rollback_to),
            KbRollbackReply,
            timeout_s,
        )
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
