"""Evidence first: a streamed question with ``early_sources`` gets the passages found on
``<answer topic>/sources`` before the model is asked to write; other questions never do."""

from __future__ import annotations

import asyncio
import json

import msgspec
import pytest

from lineside import coverage
from schemas import codec, topics
from schemas.messages import GenerateReply, GenerateRequest, Passage, RetrieveReply, RetrieveRequest
from services.gateway.devices import DeviceLines
from services.gateway.service import Gateway
from services.gateway.settings import GatewaySettings
from tests.fakes import FakeBus

ROW = "code: F-311; machine: TR-55; description: sensor blocked; action: clear the sensor"


def respond(topic: str, payload: bytes) -> list[tuple[str, bytes]]:
    if topic == topics.RETRIEVE:
        req = msgspec.msgpack.decode(payload, type=RetrieveRequest)
        passage = Passage(chunk_id=1, doc="wl2_alarms.xlsx", doc_id="a", locator="sheet Alarms row 7", text=ROW, score=0.7)
        return [
            (req.reply_to, codec.encode(RetrieveReply(request_id=req.request_id, passages=[passage], exact_match=True, best_score=0.7)))
        ]
    if topic == topics.GENERATE:
        req = msgspec.msgpack.decode(payload, type=GenerateRequest)
        reply = GenerateReply(request_id=req.request_id, text="F-311: sensor blocked [1].", model="m", used=[0], quotes=[(0, ROW)])
        return [(req.reply_to, codec.encode(reply))]
    return []


def _run(tmp_path, log, question: dict) -> FakeBus:
    gw = Gateway(GatewaySettings(data_dir=str(tmp_path)), coverage.CoverageSettings(threshold=0.3), DeviceLines(tmp_path / "none"), log)
    bus = FakeBus(client_id="lineside-gateway", respond=respond)
    bus.put(topics.ask_device("hmi-wl2"), json.dumps(question).encode())

    async def serve() -> None:
        task = asyncio.create_task(gw.consume(bus))  # type: ignore[arg-type]
        try:
            async with asyncio.timeout(10):
                await bus.until(lambda: bus.on(topics.answer_device("hmi-wl2")))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(serve())
    return bus


def test_the_passages_found_go_out_before_the_model_is_asked(tmp_path, log):
    bus = _run(tmp_path, log, {"question": "What does F-311 mean?", "request_id": "q1", "stream": True, "early_sources": True})
    order = [t for t, _, _ in bus.published]
    sources_topic = topics.sources_topic(topics.answer_device("hmi-wl2"))
    assert order.index(sources_topic) < order.index(topics.GENERATE)
    sent = json.loads(bus.on(sources_topic)[0])
    assert sent["request_id"] == "q1"
    assert [(s["doc"], s["locator"]) for s in sent["sources"]] == [("wl2_alarms.xlsx", "sheet Alarms row 7")]
    assert sent["sources"][0]["snippet"].startswith("code: F-311")


@pytest.mark.parametrize("extra", [{"stream": True}, {"early_sources": True}, {}])
def test_without_asking_for_them_nothing_new_arrives(tmp_path, log, extra):
    bus = _run(tmp_path, log, {"question": "What does F-311 mean?", "request_id": "q1", **extra})
    assert not bus.on(topics.sources_topic(topics.answer_device("hmi-wl2")))
    assert json.loads(bus.on(topics.answer_device("hmi-wl2"))[0])["status"] == "answered"
