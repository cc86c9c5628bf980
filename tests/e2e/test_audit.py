"""The audit trail on a secured box: every question a device asks is recorded with its answer,
`lineside audit` prints them (text, JSON, CSV), `lineside audit gaps` names what the documents do
not answer, operator accounts read it over MQTT and devices cannot."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import uuid

import msgspec
import pytest

from lineside import audit, cli
from lineside.bus import Bus
from lineside.client import Asker
from lineside.security import layout
from lineside.settings import Connection
from schemas import codec, topics
from schemas.messages import AuditQuery
from tests.conftest import EXAMPLES, start_stack

pytestmark = pytest.mark.e2e

DEVICE = "hmi-wl2"
QUESTIONS = (
    "What is the nominal press force of the PX-200 press?",
    "What does fault P-22 mean on the PX-200 press?",
    "Which parking spaces are reserved for visitors at the north gate?",  # nothing in the documents: falls back
)


def _cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(list(argv)) == 0
    return out.getvalue()


def _device(box, name: str, *extra: str) -> Connection:
    printed = _cli("device", "add", name, *extra, "--data", str(box.data))
    password = next(line.split(": ", 1)[1] for line in printed.splitlines() if line.startswith("password"))
    return Connection(
        mqtt_host="127.0.0.1",
        mqtt_port=box.tls_port,
        mqtt_username=name,
        mqtt_password=password,
        mqtt_tls=True,
        mqtt_ca_file=str(layout.paths(box.data).certs / "ca.crt"),
        data_dir=str(box.data),
    )


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    """A secured box (profile none: no model to load) where a device asked three questions."""
    stack = start_stack(
        tmp_path_factory.mktemp("audit"), sorted((EXAMPLES / "docs").iterdir()), env={"LINESIDE_LLM_PROFILE": "none"}, secure=True
    )
    try:
        conn = _device(stack, DEVICE)

        async def ask_all() -> list[dict]:
            async with Asker(conn, device=DEVICE, own_topic=True) as asker:
                return [await asker.ask({"question": q, "request_id": f"wl2-{i}"}, timeout_s=60) for i, q in enumerate(QUESTIONS)]

        stack.answers = asyncio.run(ask_all())
        yield stack
    finally:
        stack.stop()
    assert not stack.errors()


def test_each_question_is_recorded_with_its_answer_sources_and_timings(box):
    assert [a["status"] for a in box.answers] == ["answered", "answered", "fallback"]
    records = json.loads(_cli("audit", "--device", DEVICE, "--json", "--data", str(box.data)))
    assert [r["request_id"] for r in records] == ["wl2-0", "wl2-1", "wl2-2"]
    for r, q, a in zip(records, QUESTIONS, box.answers, strict=True):
        assert r["device"] == DEVICE
        assert r["question"] == q
        assert r["status"] == a["status"]
        assert r["answer"] == a["answer"]
        assert r["model"] == a["model"]
        assert [(s["doc"], s["locator"]) for s in r["sources"]] == [(s["doc"], s["locator"]) for s in a["sources"]]
        assert r["latency_ms"] > 0
        assert r["retrieval_ms"] > 0
        assert r["ts"] > 0
    assert records[0]["sources"], "an answered question names its sources"
    assert records[0]["generation_ms"] > 0
    assert records[2]["reason"] == box.answers[2]["reason"]

    fallbacks = json.loads(_cli("audit", "--status", "fallback", "--json", "--data", str(box.data)))
    assert [r["request_id"] for r in fallbacks] == ["wl2-2"]
    rows = list(csv.DictReader(io.StringIO(_cli("audit", "--csv", "--data", str(box.data)))))
    assert [row["question"] for row in rows if row["device"] == DEVICE] == list(QUESTIONS)
    assert "page" in rows[0]["sources"] or "row" in rows[0]["sources"] or "section" in rows[0]["sources"]
    text = _cli("audit", "--data", str(box.data))
    assert QUESTIONS[2] in text
    assert "fallback" in text


def test_gaps_lists_the_question_the_documents_do_not_answer(box):
    gaps = json.loads(_cli("audit", "gaps", "--json", "--since", "1d", "--data", str(box.data)))
    assert [g["question"] for g in gaps] == [QUESTIONS[2]]
    assert gaps[0]["count"] == 1
    assert gaps[0]["reasons"] == [box.answers[2]["reason"]]
    assert QUESTIONS[2] in _cli("audit", "gaps", "--data", str(box.data))


def test_an_operator_account_reads_the_audit_log_over_mqtt(box):
    admin = box.client_conn()
    reply = asyncio.run(audit.fetch(admin, AuditQuery(request_id="op-1", reply_to="", device=DEVICE)))
    assert reply.error is None
    assert [r.question for r in reply.records] == list(QUESTIONS)
    gaps = asyncio.run(audit.fetch(admin, AuditQuery(request_id="op-2", reply_to="", gaps=True)))
    assert [g.question for g in gaps.gaps] == [QUESTIONS[2]]


def test_an_operator_of_the_web_page_reads_it_over_tls(box):
    operator = _device(box, "op-wl2", "--role", "operator")
    reply = asyncio.run(audit.fetch(operator, AuditQuery(request_id="web-1", reply_to="", status="fallback")))
    assert [r.question for r in reply.records] == [QUESTIONS[2]]


def test_a_device_cannot_read_or_query_the_audit_log(box):
    spy = _device(box, "hmi-spy")
    rid = f"spy-{uuid.uuid4().hex[:8]}"

    async def snoop() -> list[str]:
        seen: list[str] = []
        inbox = topics.audit_reply("hmi-spy")
        async with Bus(spy, client_id="hmi-spy", subscriptions=(f"{topics.ROOT}/audit/#",)) as bus:
            await bus.publish(topics.AUDIT_QUERY, codec.encode(AuditQuery(request_id=rid, reply_to=inbox)))
            # Meanwhile an operator's query is answered: its reply must not reach the device either.
            await audit.fetch(box.client_conn(), AuditQuery(request_id=f"op-{rid}", reply_to=""))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3):
                    async for m in bus.messages():
                        seen.append(m.topic)
        return seen

    assert asyncio.run(snoop()) == []
    queries = [e.get("request_id") for e in box.events("gateway", "audit_query")]
    assert f"op-{rid}" in queries  # the gateway answered the operator
    assert rid not in queries  # and never saw the device's query: the broker dropped it


def test_the_audit_log_refuses_changes(box):
    import sqlite3

    db = sqlite3.connect(box.data / audit.FILE_NAME)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("UPDATE audit SET answer = 'changed'")
        with pytest.raises(sqlite3.DatabaseError, match="cannot be deleted"):
            db.execute("DELETE FROM audit")
    finally:
        db.close()
    assert msgspec.json.decode(_cli("audit", "--json", "--data", str(box.data)))[0]["answer"] != "changed"
