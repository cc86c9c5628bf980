"""The LLM service class with a fake bus and a fake model: streaming, the cache, busy, expired and failures."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from lineside.runtime import ComputeThread
from schemas import codec
from schemas.messages import GatewayInbox, GenerateDelta, GenerateReply, GenerateRequest, Passage
from services.llm.adapters import Generation
from services.llm.service import LlmService
from services.llm.settings import LlmSettings

REPLY_TO = "lineside/v1/internal/gateway/reply/test"
PASSAGE = Passage(
    chunk_id=1, doc="px200.md", doc_id="d1", locator="p. 1", text="The nominal press force of the PX-200 press is 2000 kN.", score=0.9
)


class FakeBus:
    """Records what would be published."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, topic: str, payload: bytes) -> None:
        self.published.append((topic, payload))

    def decoded(self) -> list[Any]:
        """What was published, as the gateway would read it."""
        decode = codec.decoder(GatewayInbox)
        return [decode.decode(p) for _, p in self.published]


class FakeLog:
    """Records log events by name."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def _record(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    info = warning = exception = _record


class FakeModel:
    """Answers with fixed pieces, or raises when told to."""

    name = "fake"

    def __init__(self, pieces: list[str], fail: bool = False) -> None:
        self.pieces = pieces
        self.fail = fail
        self.calls = 0

    def chat(self, messages: list[dict[str, str]], max_tokens: int, on_delta: Callable[[str], None] | None = None) -> Generation:
        self.calls += 1
        if self.fail:
            raise RuntimeError("out of memory")
        for p in self.pieces:
            if on_delta is not None:
                on_delta(p)
        return Generation(text="".join(self.pieces), prompt_tokens=42, completion_tokens=len(self.pieces), ttft_ms=5.0)

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def request(rid: str = "r-1", **kw: Any) -> GenerateRequest:
    return GenerateRequest(
        request_id=rid, question="What is the nominal press force of the PX-200?", lang="en", passages=[PASSAGE], reply_to=REPLY_TO, **kw
    )


def service(model: FakeModel | None, **settings: Any) -> tuple[LlmService, FakeLog]:
    log = FakeLog()
    return LlmService(LlmSettings(**settings), model, model.name if model else "extractive", ComputeThread("test"), log), log


def test_a_streamed_answer_arrives_as_ordered_deltas_then_the_reply_and_the_same_prompt_again_comes_from_the_cache():
    model = FakeModel(["The force ", "is 2000 kN."])
    svc, log = service(model)
    bus = FakeBus()

    async def go() -> None:
        await svc.generate(bus, request("r-1", stream=True))
        await svc.generate(bus, request("r-2"))

    asyncio.run(go())
    out = bus.decoded()
    deltas = [m for m in out if isinstance(m, GenerateDelta)]
    replies = [m for m in out if isinstance(m, GenerateReply)]
    assert {t for t, _ in bus.published} == {REPLY_TO}
    assert [d.seq for d in deltas] == list(range(len(deltas)))
    assert "".join(d.delta for d in deltas) == "The force is 2000 kN."
    assert isinstance(out[-1], GenerateReply)
    assert [(r.request_id, r.text, r.cached, r.worker) for r in replies] == [
        ("r-1", "The force is 2000 kN.", False, "lineside-llm"),
        ("r-2", "The force is 2000 kN.", True, "lineside-llm"),
    ]
    assert model.calls == 1
    assert [kw["cached"] for e, kw in log.events if e == "generated"] == [False, True]


def test_a_full_queue_answers_busy_at_once():
    svc, log = service(FakeModel(["x"]), max_queue=1)
    bus = FakeBus()

    async def go() -> None:
        await svc.on_message(bus, request("r-1"))
        await svc.on_message(bus, request("r-2"))

    asyncio.run(go())
    [reply] = bus.decoded()
    assert (reply.request_id, reply.error, reply.model) == ("r-2", "busy", "fake")
    assert svc.queue.qsize() == 1
    assert svc.counters.values["busy"] == 1
    assert [e for e, _ in log.events] == ["busy"]


def test_an_expired_request_and_a_failed_model_are_answered_with_errors():
    model = FakeModel([], fail=True)
    svc, log = service(model)
    bus = FakeBus()

    async def go() -> None:
        await svc.generate(bus, request("old", deadline_unix=1.0))
        await svc.generate(bus, request("r-1"))

    asyncio.run(go())
    expired, failed = bus.decoded()
    assert (expired.request_id, expired.error) == ("old", "expired")
    assert (failed.request_id, failed.error) == ("r-1", "generation failed: out of memory")
    assert [e for e, _ in log.events] == ["expired", "generate_failed", "generated"]


def test_without_a_model_the_answer_quotes_the_best_passage():
    svc, _ = service(None)
    bus = FakeBus()
    asyncio.run(svc.generate(bus, request("r-1", stream=True)))
    delta, reply = bus.decoded()
    assert isinstance(delta, GenerateDelta)
    assert delta.delta == reply.text
    assert "2000 kN" in reply.text
    assert (reply.model, reply.quotes, reply.used) == ("extractive", [], [0])


def test_an_identical_question_that_waited_for_the_first_ones_generation_is_not_called_cached():
    model = FakeModel(["The force is 2000 kN."])
    svc, _ = service(model)
    bus = FakeBus()

    async def go() -> None:
        # Both arrive while nothing is cached: the second waits behind the first in the queue.
        await svc.on_message(bus, request("r-1"))
        await svc.on_message(bus, request("r-2"))
        await svc.generate(bus, svc.queue.get_nowait())
        await svc.generate(bus, svc.queue.get_nowait())
        # Asked again later: now the answer was there when it arrived.
        await svc.on_message(bus, request("r-3"))
        await svc.generate(bus, svc.queue.get_nowait())

    asyncio.run(go())
    replies = [m for m in bus.decoded() if isinstance(m, GenerateReply)]
    assert [(r.request_id, r.cached) for r in replies] == [("r-1", False), ("r-2", False), ("r-3", True)]
    assert model.calls == 1, "the second is still served from the first one's generation"
    assert svc.arrived == {}
