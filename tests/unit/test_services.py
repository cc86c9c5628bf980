"""The retriever and gateway service classes over the in-memory bus: dispatch by message type,
replies matched by request id, answers and fallbacks as a device receives them."""

from __future__ import annotations

import asyncio
import json

import msgspec
import numpy as np
import pytest

from lineside import coverage
from lineside.runtime import ComputeThread
from schemas import codec, topics
from schemas.messages import (
    Chunk,
    GenerateReply,
    GenerateRequest,
    IndexChunks,
    KbListReply,
    KbListRequest,
    Passage,
    RetrieveReply,
    RetrieveRequest,
)
from services.gateway.devices import DeviceLines
from services.gateway.service import Gateway
from services.gateway.settings import GatewaySettings
from services.retriever.adapters import Index
from services.retriever.service import Retriever
from services.retriever.settings import RetrieverSettings
from tests.fakes import FakeBus


class HashEmbedder:
    """Deterministic unit vectors from the text's words (the real model is not under test here)."""

    name = "hash-test"
    dim = 64

    def embed(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, hash(w) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


async def _serve(service, bus, until):
    task = asyncio.create_task(service.consume(bus))
    try:
        async with asyncio.timeout(10):
            await bus.until(until)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_the_retriever_indexes_searches_and_lists_by_message_type(tmp_path, log):
    embedder = HashEmbedder()
    index = Index(tmp_path / "index", dim=embedder.dim, model=embedder.name)
    retriever = Retriever(RetrieverSettings(), embedder, index, ComputeThread("test"), log)
    bus = FakeBus()
    chunks = [
        Chunk(locator="row 2", title="alarms.xlsx", text="code: F-311; machine: TR-55; description: sensor blocked"),
        Chunk(locator="row 3", title="alarms.xlsx", text="code: F-412; machine: BF-8; description: turret overload"),
    ]

    async def scenario():
        task = asyncio.create_task(retriever.consume(bus))
        try:
            bus.put(topics.RETRIEVE, b"\x93garbage")  # logged and skipped, never kills the consumer
            msg = IndexChunks(request_id="i1", doc="alarms.xlsx", doc_id="alarms", version="v1", chunks=chunks, ingested_at=0.0)
            bus.put(topics.INDEX, codec.encode(msg))
            await bus.until(lambda: bus.on(topics.INGEST_STATUS))
            bus.put(
                topics.RETRIEVE, codec.encode(RetrieveRequest(request_id="s1", question="What does F-311 mean?", reply_to="r/s", top_k=2))
            )
            bus.put(topics.KB, codec.encode(KbListRequest(request_id="k1", reply_to="r/k")))
            await bus.until(lambda: bus.on("r/s") and bus.on("r/k"))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(asyncio.wait_for(scenario(), 10))
    search = msgspec.msgpack.decode(bus.on("r/s")[0], type=RetrieveReply)
    listing = msgspec.msgpack.decode(bus.on("r/k")[0], type=KbListReply)
    assert json.loads(bus.on(topics.INGEST_STATUS)[0])["stage"] == "indexed"
    assert search.passages[0].locator == "row 2"  # the row of the code asked about
    assert search.exact_match
    assert [(d.doc, d.chunks) for d in listing.documents] == [("alarms.xlsx", 2)]
    assert log.events("invalid_message"), "the garbage message was not reported"
    index.close()


def _gateway(tmp_path, log, respond):
    gw = Gateway(
        GatewaySettings(data_dir=str(tmp_path)), coverage.CoverageSettings(threshold=0.3), DeviceLines(tmp_path / "none.json"), log
    )
    return gw, FakeBus(client_id="lineside-gateway", respond=respond)


def _passage(text: str, score: float) -> Passage:
    return Passage(chunk_id=1, doc="alarms.xlsx", doc_id="alarms", locator="row 2", text=text, score=score)


def _answering(row: str, text: str, quotes: list[tuple[int, str]] | None = None):
    """A respond hook: the retriever finds ``row`` (an exact match), the LLM writes ``text``."""

    def respond(topic, payload):
        if topic == topics.RETRIEVE:
            req = msgspec.msgpack.decode(payload, type=RetrieveRequest)
            rep = RetrieveReply(request_id=req.request_id, passages=[_passage(row, 0.7)], exact_match=True, best_score=0.7)
            return [(req.reply_to, codec.encode(rep))]
        if topic == topics.GENERATE:
            req = msgspec.msgpack.decode(payload, type=GenerateRequest)
            rep = GenerateReply(request_id=req.request_id, text=text, model="m", used=[0], quotes=quotes or [])
            return [(req.reply_to, codec.encode(rep))]
        return []

    return respond


def test_the_gateway_answers_with_the_model_s_words_and_the_evidence_apart(tmp_path, log):
    row = "code: F-311; machine: TR-55; description: sensor blocked; action: clear the sensor"
    gw, bus = _gateway(tmp_path, log, _answering(row, "F-311 is a sensor blocked [1].", [(0, row)]))
    bus.put(topics.ask_device("hmi-1"), json.dumps({"question": "What does F-311 mean?", "request_id": "q1"}).encode())
    asyncio.run(_serve(gw, bus, lambda: bus.on(topics.answer_device("hmi-1"))))
    answer = json.loads(bus.on(topics.answer_device("hmi-1"))[0])
    assert (answer["status"], answer["request_id"]) == ("answered", "q1")
    assert answer["answer"] == "F-311 is a sensor blocked [1]."
    assert answer["evidence"] == [{"source": 1, "text": row}]
    assert [s["doc"] for s in answer["sources"]] == ["alarms.xlsx"]


@pytest.mark.parametrize("said", ["I don't know.", "It means the oven is at 990 °C."])
def test_a_model_that_cannot_read_the_passages_gives_way_to_the_source_line(tmp_path, log, said):
    """The model says it does not know, or writes a value no passage has, beside the row that answers."""
    row = "code: F-311; machine: TR-55; description: sensor blocked; action: clear the sensor"
    gw, bus = _gateway(tmp_path, log, _answering(row, said, [(0, row)]))
    bus.put(topics.ask_device("hmi-1"), json.dumps({"question": "What does F-311 mean?", "request_id": "q1"}).encode())
    asyncio.run(_serve(gw, bus, lambda: bus.on(topics.answer_device("hmi-1"))))
    answer = json.loads(bus.on(topics.answer_device("hmi-1"))[0])
    assert (answer["status"], answer["model"]) == ("answered", "extractive")
    assert answer["answer"] == f"\u201c{row}\u201d [1]"  # the document's words, not the model's
    assert "990" not in answer["answer"]
    counted = gw.metrics.registry.get_sample_value("lineside_questions_total", {"status": "answered", "reason": "extractive"})
    assert counted == 1  # an operator sees how often the model could not phrase an answer
    assert [(s["doc"], s["locator"]) for s in answer["sources"]] == [("alarms.xlsx", "row 2")]


def test_a_model_that_finds_no_answer_falls_back_when_no_line_states_it_or_quoting_is_off(tmp_path, log):
    row = "code: F-311; machine: TR-55; description: sensor blocked"
    for quotes, quote_when_unsure in (([], True), ([(0, row)], False)):
        gw, bus = _gateway(tmp_path, log, _answering(row, "I don't know.", quotes))
        gw.s = msgspec.structs.replace(gw.s, quote_when_unsure=quote_when_unsure)
        bus.put(topics.ask_device("hmi-1"), json.dumps({"question": "What does F-311 mean?"}).encode())
        asyncio.run(_serve(gw, bus, lambda bus=bus: bus.on(topics.answer_device("hmi-1"))))
        answer = json.loads(bus.on(topics.answer_device("hmi-1"))[0])
        assert (answer["status"], answer["reason"]) == ("fallback", "model_unsure")


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (RetrieveReply(request_id="", passages=[_passage("x", 0.9)], unknown_terms=["WL-3"], unknown_lines=["WL-3"]), "unknown_line"),
        (RetrieveReply(request_id="", passages=[_passage("x", 0.1)], best_score=0.1), "not_covered"),
        (RetrieveReply(request_id="", passages=[]), "nothing_found"),
    ],
)
def test_the_gateway_falls_back_without_the_model_and_says_why(tmp_path, log, reply, reason):
    asked_llm = []

    def respond(topic, payload):
        if topic == topics.RETRIEVE:
            req = msgspec.msgpack.decode(payload, type=RetrieveRequest)
            return [(req.reply_to, codec.encode(msgspec.structs.replace(reply, request_id=req.request_id)))]
        asked_llm.append(topic == topics.GENERATE)
        return []

    gw, bus = _gateway(tmp_path, log, respond)
    bus.put(topics.ask_device("hmi-1"), json.dumps({"question": "Changeover on WL-3?"}).encode())
    asyncio.run(_serve(gw, bus, lambda: bus.on(topics.answer_device("hmi-1"))))
    answer = json.loads(bus.on(topics.answer_device("hmi-1"))[0])
    assert (answer["status"], answer["reason"], answer["answer"]) == ("fallback", reason, "Please contact technical support.")
    assert not any(asked_llm)


def test_the_gateway_says_when_the_retriever_does_not_answer(tmp_path, log):
    gw, bus = _gateway(tmp_path, log, lambda topic, payload: [])
    gw.s = msgspec.structs.replace(gw.s, retrieve_timeout_s=0.2)
    bus.put(topics.ask_device("hmi-1"), json.dumps({"question": "F-311?"}).encode())
    asyncio.run(_serve(gw, bus, lambda: bus.on(topics.answer_device("hmi-1"))))
    answer = json.loads(bus.on(topics.answer_device("hmi-1"))[0])
    assert (answer["status"], answer["error"]["code"]) == ("error", "retriever_timeout")


def test_an_index_of_another_embedding_model_is_embedded_again_before_the_retriever_serves(tmp_path, log):
    old = Index(tmp_path / "index", dim=HashEmbedder.dim, model="some-older-model")
    chunk = Chunk(locator="row 2", title="alarms.xlsx", text="code: F-311; description: sensor blocked")
    old.replace("alarms.xlsx", "alarms", "v1", [chunk], np.eye(1, HashEmbedder.dim, dtype=np.float32))
    old.close()
    embedder = HashEmbedder()
    index = Index(tmp_path / "index", dim=embedder.dim, model=embedder.name)
    assert index.stale
    asyncio.run(Retriever(RetrieverSettings(), embedder, index, ComputeThread("test"), log).prepare())
    assert (index.stale, len(index)) == (False, 1)
    assert [e["chunks"] for e in log.events("reembedded")] == [1]
    assert log.events("reembedding")  # what `lineside up` reads to wait for it
    index.close()


def test_a_plcs_integer_request_id_is_echoed_as_an_integer_also_on_a_rejection(tmp_path, log):
    row = "code: F-311; machine: TR-55; description: label sensor blocked by a torn label; action: clear the sensor and re-thread the web"
    text = "F-311 on the TR-55 means the label sensor is blocked by a torn label [1]; clear the sensor and re-thread the web."
    gw, bus = _gateway(tmp_path, log, _answering(row, text))
    bus.put(topics.ask_device("plc-7"), json.dumps({"question": "What does F-311 mean?", "request_id": 311}).encode())
    bus.put(topics.ask_device("plc-7"), json.dumps({"question": "?!", "request_id": 312}).encode())
    asyncio.run(_serve(gw, bus, lambda: len(bus.on(topics.answer_device("plc-7"))) >= 2))
    answers = {a["request_id"]: a for a in map(json.loads, bus.on(topics.answer_device("plc-7")))}
    assert set(answers) == {311, 312}, "integers, as the PLC sent them"
    assert answers[311]["status"] == "answered"
    assert answers[311]["answer_short"] == "F-311 on the TR-55 means the label sensor is blocked by a torn label; clear…"
    assert len(answers[311]["answer_short"]) <= 80
    assert (answers[312]["status"], answers[312]["error"]["code"]) == ("rejected", "not_a_question")
    assert answers[312]["answer_short"] == "the question contains no letters or digits"
    rejected = [e for e in log.events("ask") if e.get("status") == "rejected"]
    assert [(e["device"], e["request_id"]) for e in rejected] == [("plc-7", 312)], "the log line names device and request id"
