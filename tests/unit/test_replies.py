"""lineside.bus.Replies: the one request/reply table, by request id (internal) or Correlation Data (devices)."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from lineside.bus import Replies
from schemas import codec
from schemas.messages import GenerateDelta, GenerateReply, GenerateRequest
from tests.fakes import FakeBus


async def _with_pump(replies: Replies, coro):
    pump = asyncio.create_task(replies.pump())
    try:
        return await coro
    finally:
        pump.cancel()


def test_an_internal_request_gets_its_own_reply_and_a_stream_piece_is_left_to_the_dispatcher():
    def respond(topic, payload):
        req = msgspec.msgpack.decode(payload, type=GenerateRequest)
        piece = GenerateDelta(request_id=req.request_id, seq=0, delta="Tor")
        other = GenerateReply(request_id="someone-else", text="not yours")
        mine = GenerateReply(request_id=req.request_id, text="Torque 62 N·m")
        return [(req.reply_to, codec.encode(m)) for m in (piece, other, mine)]

    bus = FakeBus(client_id="gw", respond=respond)
    replies = Replies(bus)
    req = GenerateRequest(request_id="k1", question="q", lang="en", passages=[], reply_to=replies.inbox)
    reply = asyncio.run(_with_pump(replies, replies.request("internal/llm/generate", req, GenerateReply, 5)))
    assert (reply.request_id, reply.text) == ("k1", "Torque 62 N·m")
    assert not replies.waiting("k1")


def test_a_device_exchange_is_matched_by_correlation_data():
    def respond(topic, payload):
        return [("lineside/v1/answer/hmi-1/x", b'{"status": "answered"}')]

    bus = FakeBus(respond=respond)
    original_put = bus.put
    bus.put = lambda topic, payload, **props: original_put(topic, payload, correlation_data=b"c-7")  # the broker echoes it

    replies = Replies(bus)
    got = asyncio.run(_with_pump(replies, replies.exchange("lineside/v1/ask/hmi-1", b"F-311?", b"c-7", 5)))
    assert got.payload == b'{"status": "answered"}'
    assert bus.published[0][2]["correlation_data"] == b"c-7"


def test_no_reply_is_a_timeout_and_a_vanished_worker_fails_the_request():
    bus = FakeBus()
    replies = Replies(bus)
    req = GenerateRequest(request_id="k2", question="q", lang="en", passages=[], reply_to=replies.inbox)
    with pytest.raises(TimeoutError):
        asyncio.run(_with_pump(replies, replies.request("t", req, GenerateReply, 0.05)))

    async def vanish() -> None:
        task = asyncio.create_task(replies.request("t", req, GenerateReply, 5))
        await bus.until(lambda: bus.published[1:])
        replies.fail("k2", RuntimeError("llm went offline"))
        await task

    with pytest.raises(RuntimeError, match="offline"):
        asyncio.run(vanish())
