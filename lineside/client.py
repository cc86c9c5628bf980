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
from schemas.messages import IngestDocument

TERMINAL_STAGES = ("indexed", "unchanged", "failed", "deleted")


async def ask(
    conn: Connection,
    question: str | dict[str, Any],
    *,
    device: str = "cli",
    timeout_s: float = 120.0,
    msgpack: bool = False,
) -> dict[str, Any]:
    """Ask over the MQTT 5 request/response path and return the decoded answer."""
    payload_obj = {"question": question} if isinstance(question, str) else question
    payload = msgspec.msgpack.encode(payload_obj) if msgpack else json.dumps(payload_obj, ensure_ascii=False).encode()
    reply_topic = f"{topics.answer_device(device)}/{uuid.uuid4().hex[:12]}"
    corr = uuid.uuid4().hex.encode()
    async with Bus(conn, subscriptions=(reply_topic,)) as bus:
        await bus.publish(
            topics.ASK,
            payload,
            response_topic=reply_topic,
            correlation_data=corr,
            content_type=codec.MSGPACK if msgpack else "application/json",
        )

        async def first() -> dict[str, Any]:
            async for m in bus.messages():
                if m.topic == reply_topic and m.correlation_data == corr:
                    return msgspec.msgpack.decode(m.payload) if msgpack else json.loads(m.payload)
            raise RuntimeError("connection closed before the answer arrived")

        return await asyncio.wait_for(first(), timeout_s)


async def ingest(
    conn: Connection,
    paths: Sequence[Path],
    *,
    wait: bool = True,
    timeout_s: float = 600.0,
    line: str | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Send documents to the ingest service; with ``wait``, return each one's final status event."""
    ids = {}
    async with Bus(conn, subscriptions=(topics.INGEST_STATUS,) if wait else ()) as bus:
        for path in paths:
            data = path.read_bytes()
            rid = uuid.uuid4().hex
            ids[rid] = path.name
            doc = IngestDocument(request_id=rid, name=path.name, content=data, sha256=hashlib.sha256(data).hexdigest(), line=line)
            await bus.publish(topics.INGEST_DOCUMENT, codec.encode(doc))
        if not wait:
            return {}
        final: dict[str, dict[str, Any]] = {}

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
                    if len(final) == len(ids):
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
