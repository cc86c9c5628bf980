"""Nothing lost, over the in-memory bus: the gateway's question journal (a question journaled before
it is acknowledged, answered once, resumed after a restart, re-issued when its worker dies) and the
retriever's queue of index updates on disk."""

from __future__ import annotations

import asyncio
import json
import time

import msgspec

from lineside import coverage
from lineside.bus import Inbound
from lineside.durable import DurableQueue
from lineside.runtime import ComputeThread
from schemas import codec, topics
from schemas.messages import Chunk, GenerateReply, GenerateRequest, IndexChunks, Passage, RetrieveReply, RetrieveRequest
from services.gateway.devices import DeviceLines
from services.gateway.journal import Journal
from services.gateway.service import Gateway
from services.gateway.settings import GatewaySettings
from services.retriever.adapters import Index
from services.retriever.service import Retriever
from services.retriever.settings import RetrieverSettings
from tests.fakes import FakeBus
from tests.unit.test_services import HashEmbedder

ROW = "code: F-311; machine: TR-55; description: sensor blocked; action: clear the sensor"


def _ask(rid: str, device: str = "hmi-wl2") -> Inbound:
    return Inbound(topic=topics.ask_device(device), payload=json.dumps({"question": "What does F-311 mean?", "request_id": rid}).encode())


def test_a_question_is_accepted_once_and_stays_pending_until_finished_across_reopen(tmp_path):
    path = tmp_path / "journal.db"
    j = Journal(path, keep_s=60)
    assert j.accept("hmi-wl2/q1", "q1", _ask("q1"), now=1000.0)
    assert not j.accept("hmi-wl2/q1", "q1", _ask("q1"), now=1001.0)  # a redelivered copy
    assert j.accept("hmi-wl2/q2", "q2", _ask("q2"), now=1002.0)
    j.finish("hmi-wl2/q2", "answered", now=1003.0)
    j.close()

    again = Journal(path, keep_s=60)  # a restarted gateway
    pending = again.pending(now_mono=500.0, now=1010.0)
    assert [(rid, key) for _, rid, key in pending] == [("q1", "hmi-wl2/q1")]
    m = pending[0][0]
    assert (m.topic, json.loads(m.payload)["request_id"]) == (topics.ask_device("hmi-wl2"), "q1")
    assert m.received_at == 490.0  # its latency and deadline count from its arrival, 10 s before
    assert not again.accept("hmi-wl2/q2", "q2", _ask("q2"), now=1004.0)  # answered a moment ago: still a duplicate
    again.close()


def test_answered_questions_are_forgotten_after_keep_s_so_a_request_id_can_be_used_again(tmp_path):
    j = Journal(tmp_path / "journal.db", keep_s=60)
    assert j.accept("hmi-wl2/q1", "q1", _ask("q1"), now=1000.0)
    assert not j.accept("hmi-wl2/q1", "q1", _ask("q1"), now=1100.0)  # still unanswered: a copy
    j.finish("hmi-wl2/q1", "answered", now=1100.0)
    assert not j.accept("hmi-wl2/q1", "q1", _ask("q1"), now=1150.0)
    assert j.accept("hmi-wl2/q1", "q1", _ask("q1"), now=1161.0)  # a new question with the old id
    assert [rid for _, rid, _ in j.pending(now=1162.0)] == ["q1"]
    j.close()


def _respond(generated: list[str], *, drop_generate: int = 0):
    """A retriever and an LLM on the other side of the fake broker; the first ``drop_generate``
    generate requests vanish (their worker died holding them)."""

    def respond(topic, payload):
        if topic == topics.RETRIEVE:
            req = msgspec.msgpack.decode(payload, type=RetrieveRequest)
            passage = Passage(chunk_id=1, doc="alarms.xlsx", doc_id="alarms", locator="row 2", text=ROW, score=0.7)
            rep = RetrieveReply(request_id=req.request_id, passages=[passage], exact_match=True, best_score=0.7)
            return [(req.reply_to, codec.encode(rep))]
        if topic == topics.GENERATE:
            req = msgspec.msgpack.decode(payload, type=GenerateRequest)
            generated.append(req.request_id)
            if len(generated) <= drop_generate:
                return []
            rep = GenerateReply(request_id=req.request_id, text="F-311 is a sensor blocked [1].", model="m", used=[0])
            return [(req.reply_to, codec.encode(rep))]
        return []

    return respond


def _gateway(tmp_path, log, journal, **settings):
    s = GatewaySettings(data_dir=str(tmp_path), **settings)
    return Gateway(s, coverage.CoverageSettings(threshold=0.3), DeviceLines(tmp_path / "none.json"), log, journal=journal)


async def _run(gw, bus, until, during=None):
    task = asyncio.create_task(gw.consume(bus))
    try:
        async with asyncio.timeout(10):
            if during is not None:
                await during()
            await bus.until(until)
            await asyncio.sleep(0.2)  # room for a second answer, if one were coming
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _answers(bus, device="hmi-wl2"):
    return [json.loads(p) for p in bus.on(topics.answer_device(device))]


def test_a_duplicate_question_gets_one_answer_and_every_question_is_acknowledged(tmp_path, log):
    journal = Journal(tmp_path / "j.db", keep_s=600)
    gw = _gateway(tmp_path, log, journal)
    bus = FakeBus(client_id="lineside-gateway", respond=_respond([]))
    for _ in range(3):  # the device resent it, the broker redelivered it
        bus.put(topics.ask_device("hmi-wl2"), _ask("q1").payload, mid=7, qos=1)
    asyncio.run(_run(gw, bus, lambda: _answers(bus)))
    assert [(a["request_id"], a["status"]) for a in _answers(bus)] == [("q1", "answered")]
    assert len([m for m in bus.acked if m.topic == topics.ask_device("hmi-wl2")]) == 3
    assert journal.pending() == []
    assert [e["request_id"] for e in log.events("duplicate_dropped")] == ["q1", "q1"]
    journal.close()


def test_questions_left_in_the_journal_by_a_killed_gateway_are_answered_after_its_restart(tmp_path, log):
    journal = Journal(tmp_path / "j.db", keep_s=600)
    for rid in ("q1", "q2"):
        journal.accept(f"hmi-wl2/{rid}", rid, _ask(rid))
    journal.finish("hmi-wl2/q2", "answered")  # answered before the crash: not again
    gw = _gateway(tmp_path, log, journal)
    bus = FakeBus(client_id="lineside-gateway", respond=_respond([]))
    asyncio.run(_run(gw, bus, lambda: _answers(bus)))
    assert [(a["request_id"], a["status"]) for a in _answers(bus)] == [("q1", "answered")]
    assert journal.pending() == []
    journal.close()


def test_a_generate_lost_with_its_worker_is_issued_again_when_a_worker_is_back(tmp_path, log):
    generated: list[str] = []
    gw = _gateway(tmp_path, log, None)
    bus = FakeBus(client_id="lineside-gateway", respond=_respond(generated, drop_generate=1))

    async def crash_and_restart():
        bus.put(topics.status("llm"), b"online")
        bus.put(topics.ask_device("hmi-wl2"), _ask("q1").payload, received_at=time.monotonic())
        await bus.until(lambda: generated)
        bus.put(topics.status("llm"), b"offline")  # its Last Will
        await asyncio.sleep(0.1)
        assert len(generated) == 1  # nothing is sent while no worker is online
        bus.put(topics.status("llm"), b"online")

    asyncio.run(_run(gw, bus, lambda: _answers(bus), during=crash_and_restart))
    assert generated == ["hmi-wl2/q1", "hmi-wl2/q1"]
    assert [(a["request_id"], a["status"]) for a in _answers(bus)] == [("q1", "answered")]
    assert [e["request_id"] for e in log.events("reissue")] == ["hmi-wl2/q1"]


def test_an_error_only_when_no_worker_is_back_by_the_question_s_deadline(tmp_path, log):
    gw = _gateway(tmp_path, log, None, worker_deadline_s=0.3)
    bus = FakeBus(client_id="lineside-gateway", respond=_respond([]))
    bus.put(topics.status("llm"), b"offline")
    bus.put(topics.ask_device("hmi-wl2"), _ask("q1").payload, received_at=time.monotonic())
    asyncio.run(_run(gw, bus, lambda: _answers(bus)))
    [answer] = _answers(bus)
    assert (answer["status"], answer["error"]["code"]) == ("error", "llm_unavailable")
    assert answer["sources"][0]["doc"] == "alarms.xlsx"  # the documents that match, to look it up
    assert answer["latency_ms"] >= 300


def test_index_updates_left_on_disk_by_a_killed_retriever_are_stored_after_its_restart(tmp_path, log):
    pending = DurableQueue(tmp_path / "updates.sqlite3")
    chunk = Chunk(locator="row 2", title="alarms.xlsx", text="code: F-311; machine: TR-55; description: sensor blocked")
    left = IndexChunks(request_id="i1", doc="alarms.xlsx", doc_id="alarms", version="v1", chunks=[chunk], ingested_at=0.0)
    pending.put(codec.encode(left))  # acknowledged to the broker, then the retriever was killed
    embedder = HashEmbedder()
    index = Index(tmp_path / "index", dim=embedder.dim, model=embedder.name)
    retriever = Retriever(RetrieverSettings(), embedder, index, ComputeThread("test"), log, pending=pending)
    bus = FakeBus()
    later = IndexChunks(request_id="i2", doc="b.md", doc_id="b", version="v1", chunks=[chunk], ingested_at=0.0)
    bus.put(topics.INDEX, codec.encode(later))
    asyncio.run(_run(retriever, bus, lambda: len(bus.on(topics.INGEST_STATUS)) >= 2))
    stages = [(json.loads(p)["doc"], json.loads(p)["stage"]) for p in bus.on(topics.INGEST_STATUS)]
    assert stages == [("alarms.xlsx", "indexed"), ("b.md", "indexed")]
    assert [d for d, *_ in index.documents()] == ["alarms.xlsx", "b.md"]
    assert pending.pending() == []  # each removed once stored
    index.close()
    pending.close()


def test_a_question_taken_up_after_the_whole_box_restarted_waits_for_the_services_to_come_back(tmp_path, log):
    journal = Journal(tmp_path / "j.db", keep_s=600)
    journal.accept("hmi-wl2/q1", "q1", _ask("q1"), now=time.time() - 600)  # asked before the box went down
    gw = _gateway(tmp_path, log, journal, worker_deadline_s=1.0)
    gw.avail.update("retriever", b"offline")  # its retained status from the clean stop
    bus = FakeBus(client_id="lineside-gateway", respond=_respond([]))

    async def services_come_up():
        await asyncio.sleep(0.3)
        bus.put(topics.status("retriever"), b"online")

    asyncio.run(_run(gw, bus, lambda: _answers(bus), during=services_come_up))
    [answer] = _answers(bus)
    assert (answer["request_id"], answer["status"]) == ("q1", "answered")
    assert answer["latency_ms"] >= 600_000  # counted from when it was asked
    journal.close()
