"""The audit log: records kept whole and unchanged, filters, retention, CSV, and the knowledge-gap report."""

from __future__ import annotations

import csv
import io
import sqlite3
import time

import pytest

from lineside import audit
from schemas.messages import AuditRecord, AuditSource


def _rec(
    question: str, status: str = "fallback", *, device: str = "hmi-wl2", ago_s: float = 0.0, reason: str = "not_covered", **kw
) -> AuditRecord:
    return AuditRecord(
        ts=time.time() - ago_s,
        request_id=kw.pop("request_id", f"r-{abs(hash((question, ago_s))) % 10**8}"),
        device=device,
        question=question,
        status=status,  # type: ignore[arg-type]
        reason=reason if status != "answered" else "",
        **kw,
    )


def test_records_come_back_whole_oldest_first_and_filtered(tmp_path):
    log = audit.AuditLog(tmp_path / audit.FILE_NAME)
    answered = _rec(
        "What is the clamp force on WL-2?",
        "answered",
        line="WL-2",
        answer="The clamp force is 12 kN.",
        sources=[AuditSource(doc="wl2_manual.pdf", locator="page 4")],
        model="qwen",
        latency_ms=2100.5,
        retrieval_ms=31.2,
        generation_ms=2000.1,
        ttft_ms=450.0,
        ago_s=60,
    )
    log.record(answered)
    log.record(_rec("Canteen menu?", device="hmi-other"))
    log.close()

    log = audit.AuditLog(tmp_path / audit.FILE_NAME)  # as another process would read it
    records = log.query()
    assert records[0] == answered
    assert [r.question for r in records] == ["What is the clamp force on WL-2?", "Canteen menu?"]
    assert [r.device for r in log.query(device="hmi-other")] == ["hmi-other"]
    assert [r.status for r in log.query(status="answered")] == ["answered"]
    assert log.query(since=time.time() - 30)[0].question == "Canteen menu?"
    assert [r.question for r in log.query(limit=1)] == ["Canteen menu?"]  # the most recent


def test_records_cannot_be_changed_and_only_expired_ones_are_removed(tmp_path):
    log = audit.AuditLog(tmp_path / audit.FILE_NAME, retention_days=30)
    log.record(_rec("old question", ago_s=40 * 86400))
    log.record(_rec("recent question", ago_s=10 * 86400))
    log.record(_rec("today's question"))  # the first write pruned the 40-day-old record
    assert [r.question for r in log.query()] == ["recent question", "today's question"]
    db = sqlite3.connect(tmp_path / audit.FILE_NAME)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE audit SET question = 'x'")
    with pytest.raises(sqlite3.DatabaseError, match="younger than a day"):
        db.execute("DELETE FROM audit")
    db.close()
    assert audit.AuditLog(tmp_path / audit.FILE_NAME, retention_days=0).prune() == 0  # 0 keeps everything


def test_gaps_group_rewordings_and_put_the_most_asked_first():
    records = [
        _rec("What is the torque for the WL-2 gripper bolts?", ago_s=300),
        _rec("Torque for the gripper bolts on WL-2?", ago_s=200, reason="model_unsure"),
        _rec("what is the torque of the WL-2 gripper bolts", ago_s=100),
        _rec("Who is on the cleaning rota this week?", ago_s=50),
        _rec("", status="rejected", reason="bad_payload"),  # not a question: left out
        _rec("液压站 HU-9 的回油滤芯多久更换一次？", ago_s=40),
        _rec("HU-9 回油滤芯多久更换？", ago_s=30),
    ]
    gaps = audit.group_gaps(records)
    assert [g.count for g in gaps] == [3, 2, 1]
    torque, filters, rota = gaps
    assert torque.question == "what is the torque of the WL-2 gripper bolts"  # the most recent wording
    assert len(torque.questions) == 3
    assert torque.reasons == ["not_covered", "model_unsure"]
    assert filters.questions == ["HU-9 回油滤芯多久更换？", "液压站 HU-9 的回油滤芯多久更换一次？"]
    assert rota.question == "Who is on the cleaning rota this week?"


def test_gaps_read_fallbacks_and_rejections_only(tmp_path):
    log = audit.AuditLog(tmp_path / audit.FILE_NAME)
    log.record(_rec("What is the clamp force on WL-2?", "answered"))
    log.record(_rec("What is the clamp force on WL-2?", "rejected", reason="line_not_allowed"))
    log.record(_rec("What is the clamp force on WL-2?", "busy", reason="rate_limited"))
    [gap] = log.gaps()
    assert gap.count == 1
    assert gap.reasons == ["line_not_allowed"]


def test_csv_has_a_header_and_one_row_per_record():
    rows = list(csv.DictReader(io.StringIO(audit.to_csv([_rec("Q, with a comma", sources=[AuditSource(doc="a.pdf", locator="page 2")])]))))
    assert rows[0]["question"] == "Q, with a comma"
    assert rows[0]["sources"] == "a.pdf (page 2)"
    assert rows[0]["time"].endswith("Z")


def test_since_takes_dates_times_and_spans_and_says_what_it_wants():
    assert audit.parse_since("2026-11-30") == 1795996800.0
    assert audit.parse_since("2026-11-30T08:00") == 1795996800.0 + 8 * 3600
    assert abs(audit.parse_since("7d") - (time.time() - 7 * 86400)) < 5
    with pytest.raises(audit.AuditError, match="7d"):
        audit.parse_since("last tuesday")


def _gateway(tmp_path, log):
    from lineside import coverage
    from services.gateway.devices import DeviceLines
    from services.gateway.service import Gateway
    from services.gateway.settings import GatewaySettings

    trail = audit.AuditLog(tmp_path / audit.FILE_NAME)
    trail.record(_rec("Who is on the cleaning rota this week?"))
    s = GatewaySettings(data_dir=str(tmp_path))
    return Gateway(s, coverage.CoverageSettings(threshold=0.3), DeviceLines(tmp_path / "none.json"), log, audit=trail)


def test_the_gateway_answers_an_audit_query_in_its_encoding_and_only_under_the_audit_replies(tmp_path, log):
    import asyncio

    import msgspec

    from lineside.bus import Inbound
    from schemas import codec, topics
    from schemas.messages import AuditQuery, AuditReply
    from tests.fakes import FakeBus

    gw, bus = _gateway(tmp_path, log), FakeBus(client_id="lineside-gateway")
    inbox = topics.audit_reply("op-wl2")

    async def go() -> None:
        query = AuditQuery(request_id="q1", reply_to=inbox, gaps=True)
        await gw.on_message(bus, Inbound(topic=topics.AUDIT_QUERY, payload=codec.encode(query)))
        as_json = b'{"request_id": "q2", "reply_to": "%s", "status": "fallback"}' % inbox.encode()
        await gw.on_message(bus, Inbound(topic=topics.AUDIT_QUERY, payload=as_json))
        elsewhere = AuditQuery(request_id="q3", reply_to=topics.answer_device("hmi-wl2"))
        await gw.on_message(bus, Inbound(topic=topics.AUDIT_QUERY, payload=codec.encode(elsewhere)))
        await gw.on_message(bus, Inbound(topic=topics.AUDIT_QUERY, payload=b"\x93garbage"))

    asyncio.run(go())
    gw.audit.close()
    gaps, records = bus.on(inbox)
    assert [g.question for g in msgspec.msgpack.decode(gaps, type=AuditReply).gaps] == ["Who is on the cleaning rota this week?"]
    [record] = msgspec.json.decode(records, type=AuditReply).records
    assert (record.question, record.status) == ("Who is on the cleaning rota this week?", "fallback")
    assert len(bus.published) == 2  # nothing to a device's answers, nothing for garbage
    assert log.events("audit_reply_refused")[0]["request_id"] == "q3"
    assert log.events("invalid_message")
