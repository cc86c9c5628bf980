"""A burst of questions larger than the LLM queue: the overflow gets `busy` at once, not silence."""

from __future__ import annotations

import asyncio

import pytest

from lineside.client import Asker
from tests.conftest import EXAMPLES, start_stack

pytestmark = pytest.mark.e2e


def test_burst_beyond_the_queue_gets_busy_and_the_rest_answered(tmp_path_factory):
    stack = start_stack(
        tmp_path_factory.mktemp("busy"),
        sorted((EXAMPLES / "docs").iterdir()),
        env={"LINESIDE_LLM_MAX_QUEUE": "1", "LINESIDE_LLM_MAX_TOKENS": "24"},
    )
    try:

        async def burst() -> list[dict]:
            async with Asker(stack.conn, device="hmi-burst") as asker:
                qs = [{"question": "What is the nominal press force of the PX-200 press?", "request_id": f"b{i}"} for i in range(6)]
                return await asyncio.gather(*(asker.ask(q, timeout_s=120) for q in qs))

        answers = asyncio.run(burst())
    finally:
        stack.stop()
    statuses = sorted(a["status"] for a in answers)
    assert "busy" in statuses
    assert "answered" in statuses
    busy = next(a for a in answers if a["status"] == "busy")
    assert busy["error"]["code"] == "llm_busy"
    assert busy["latency_ms"] < 5000  # told at once, not after waiting for the model
    assert sorted(a["request_id"] for a in answers) == [f"b{i}" for i in range(6)]
    assert not stack.errors()
