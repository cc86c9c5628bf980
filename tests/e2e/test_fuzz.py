"""Random and malformed payloads at the gateway's ask topics and at every internal topic: each
gets `rejected` (or a normal answer, when it happens to be a question) or is dropped and
counted; no service dies, and a normal question asked afterwards is answered."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lineside.bus import Bus
from lineside.client import ask
from schemas import topics

pytestmark = pytest.mark.e2e

INTERNAL = (topics.RETRIEVE, topics.GENERATE, topics.INDEX, topics.KB, topics.INGEST_DOCUMENT, topics.reply_inbox("lineside-gateway"))

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_asks = st.fixed_dictionaries(
    {"question": st.one_of(st.text(max_size=80), st.integers(), st.none(), st.lists(st.text(max_size=5), max_size=3))},
    optional={
        "request_id": st.one_of(st.text(max_size=200), st.integers()),
        "line": st.one_of(st.text(max_size=80), st.booleans()),
        "stream": st.one_of(st.booleans(), st.text(max_size=3)),
        "lang": st.text(max_size=20),
        "doc_type": st.text(max_size=12),
    },
)
PAYLOADS = st.one_of(
    st.binary(max_size=1024),
    st.text(max_size=200).map(str.encode),
    _json_values.map(lambda v: json.dumps(v).encode()),
    _asks.map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=1, max_value=200).map(lambda n: b"[" * n + b"]" * n),
)
counter = iter(range(10**6))


@settings(max_examples=30, deadline=None, derandomize=True)
@given(batch=st.lists(PAYLOADS, min_size=1, max_size=6))
def test_random_payloads_are_rejected_or_dropped_and_nothing_dies(stack, batch):
    device = f"fuzz-{next(counter)}"

    async def go() -> list[dict]:
        async with Bus(stack.conn, subscriptions=(topics.answer_device(device),)) as bus:
            for payload in batch:
                for topic in INTERNAL:
                    await bus.publish(topic, payload)
                await bus.publish(topics.ask_device(device), payload)
            answers = []
            async for m in bus.messages():
                answers.append(json.loads(m.payload))
                if len(answers) == len(batch):
                    return answers
        return answers

    answers = asyncio.run(asyncio.wait_for(go(), 240))
    assert len(answers) == len(batch)  # every payload on the ask topic got an answer
    for a in answers:
        assert a["status"] in ("rejected", "fallback", "answered", "busy"), a
        if a["status"] == "rejected":
            assert a["error"]["code"]
            assert a["error"]["message"]
    assert all(stack.alive().values())


def test_after_the_fuzzing_every_service_is_alive_and_answers(stack):
    assert all(stack.alive().values())
    ans = asyncio.run(ask(stack.conn, "What torque do the flange bolts on hydraulic pump P-201 need?", device="after-fuzz"))
    assert ans["status"] == "answered"
    assert "85" in ans["answer"]
    skipped = sum(len(stack.events(name, "invalid_message")) for name in ("gateway", "retriever", "llm", "ingest"))
    assert skipped > 0  # the internal garbage was counted and skipped, not acted on
