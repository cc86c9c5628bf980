"""Question-set evaluation: run questions through the running system and judge the answers.

The question format is the one of ``../shared/corpus-dev/questions.jsonl``: ``question``,
``answerable``, ``expected_sources``, ``must_contain``. An answerable question passes when
it is answered, cites an expected source, and states every ``must_contain`` string; an
out-of-scope one passes when it gets ``fallback``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lineside import coverage
from lineside.bus import Bus, Replies
from lineside.client import Asker
from lineside.settings import Connection
from lineside.text import compare_form
from schemas import topics
from schemas.messages import RetrieveReply, RetrieveRequest

normalise = compare_form


def load_questions(path: Path) -> list[dict[str, Any]]:
    """Questions from a JSON Lines file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def judge(q: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    """Whether one answer passes, and why not."""
    cited = [s["doc"] for s in answer.get("sources", [])]
    status = answer.get("status")
    if not q.get("answerable", True):
        return {
            "id": q["id"],
            "passed": status == "fallback",
            "status": status,
            "reason": answer.get("reason"),
            "cited": cited,
            "missing": [],
        }
    expected = q.get("expected_sources", [])
    cited_ok = any(doc in cited for doc in expected) if expected else True
    # What the device shows: the model's text and the evidence lines under it.
    said = normalise(answer.get("answer", ""))
    text = normalise("\n".join([answer.get("answer", ""), *(e.get("text", "") for e in answer.get("evidence", []))]))
    missing = [m for m in q.get("must_contain", []) if normalise(m) not in text]
    return {
        "in_text": not [m for m in q.get("must_contain", []) if normalise(m) not in said],
        "reason": answer.get("reason"),
        "id": q["id"],
        "passed": status == "answered" and cited_ok and not missing,
        "status": status,
        "cited_expected": cited_ok,
        "cited": cited,
        "missing": missing,
        "rank": next((i for i, d in enumerate(cited, 1) if d in expected), None),
    }


async def run(
    conn: Connection,
    questions: Sequence[dict[str, Any]],
    *,
    device: str = "eval",
    timeout_s: float = 180.0,
    stream: bool = False,
) -> list[dict[str, Any]]:
    """Ask every question in turn and judge each answer; adds ``latency_ms`` and ``answer``.

    With ``stream`` the answers are streamed and ``ttft_ms`` (time to the first piece of
    text, as the asker sees it) is added for questions that got one.
    """
    results = []
    async with Asker(conn, device=device) as asker:
        for q in questions:
            first: list[float] = []
            t = time.perf_counter()

            def on_delta(d: dict[str, Any], first: list[float] = first, t: float = t) -> None:
                if d.get("delta") and not first:
                    first.append((time.perf_counter() - t) * 1000)

            ans = await asker.ask(
                {"question": q["question"], "request_id": q["id"]}, timeout_s=timeout_s, on_delta=on_delta if stream else None
            )
            r = judge(q, ans)
            r["latency_ms"] = (time.perf_counter() - t) * 1000
            if first:
                r["ttft_ms"] = first[0]
            r["answer"] = ans.get("answer", "")
            r["sources"] = ans.get("sources", [])
            results.append(r)
    return results


async def run_retrieval(
    conn: Connection,
    questions: Sequence[dict[str, Any]],
    *,
    top_k: int = 5,
    settings: coverage.CoverageSettings,
    timeout_s: float = 30.0,
) -> list[dict[str, Any]]:
    """Retrieval only, no LLM: send each question straight to the retriever and judge its
    passages as if they were the cited sources, and the gateway's fallback rule on them.

    Separates retrieval errors from generation errors: status is ``fallback`` when the
    gateway would fall back on these passages, else ``retrieved``.
    """
    bus = Bus(conn)
    replies = Replies(bus)
    results = []
    async with bus:
        await bus.subscribe(replies.inbox)
        pump = asyncio.create_task(replies.pump())
        for q in questions:
            t = time.perf_counter()
            req = RetrieveRequest(request_id=uuid.uuid4().hex, question=q["question"], reply_to=replies.inbox, top_k=top_k)
            rep = await replies.request(topics.RETRIEVE, req, RetrieveReply, timeout_s)
            verdict = coverage.decide(q["question"], rep, settings)
            reason = verdict.detail if not verdict.covered else ""
            answer = {
                "status": "fallback" if reason or rep.error else "retrieved",
                "sources": [{"doc": p.doc} for p in rep.passages],
                "reason": verdict.reason,
            }
            r = judge(q, answer)
            if q.get("answerable", True):
                r["passed"] = r["status"] == "retrieved" and r["rank"] is not None
            r["latency_ms"] = (time.perf_counter() - t) * 1000
            r["answer"] = reason or ""
            r["sources"] = [{"doc": p.doc, "locator": p.locator, "score": round(p.score, 3)} for p in rep.passages]
            results.append(r)
        pump.cancel()
    return results


def summary(results: Sequence[dict[str, Any]], questions: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Pass rate, citation recall, fact rate, fallback precision/recall and latency of a run."""
    lat = sorted(r["latency_ms"] for r in results)
    p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))] if lat else 0.0
    out: dict[str, Any] = {
        "questions": len(results),
        "passed": sum(r["passed"] for r in results),
        "pass_rate": sum(r["passed"] for r in results) / len(results) if results else 0.0,
        "p50_ms": statistics.median(lat) if lat else 0.0,
        "p95_ms": p95,
    }
    if questions is not None:
        by_id = {q["id"]: q for q in questions}
        answerable = [r for r in results if by_id[r["id"]].get("answerable", True)]
        ranks = [r.get("rank") for r in answerable]
        for k in (1, 3, 5):
            out[f"cited_recall@{k}"] = sum(1 for x in ranks if x is not None and x <= k) / len(answerable) if answerable else 0.0
        out["mrr"] = sum(1 / x for x in ranks if x) / len(answerable) if answerable else 0.0
        out["fact_rate"] = (
            sum(1 for r in answerable if r["status"] == "answered" and not r["missing"]) / len(answerable) if answerable else 0.0
        )
        fell = [r for r in results if r["status"] == "fallback"]
        oos = [r for r in results if not by_id[r["id"]].get("answerable", True)]
        out["fallback_precision"] = sum(1 for r in fell if not by_id[r["id"]].get("answerable", True)) / len(fell) if fell else 1.0
        out["fallback_recall"] = sum(1 for r in oos if r["status"] == "fallback") / len(oos) if oos else 1.0
        out["answerable_fell_back"] = sum(1 for r in answerable if r["status"] == "fallback")
        out["facts_in_model_text"] = (
            sum(1 for r in answerable if r["status"] == "answered" and r.get("in_text")) / len(answerable) if answerable else 0.0
        )
        out.update(breakdown(results, questions))
    return out


def breakdown(results: Sequence[dict[str, Any]], questions: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Passed / asked by language and by kind of question ("zh": "22/26", "procedure": "4/5")."""
    by_id = {q["id"]: q for q in questions}
    out: dict[str, str] = {}
    for field in ("lang", "kind"):
        groups: dict[str, list[bool]] = {}
        for r in results:
            groups.setdefault(str(by_id[r["id"]].get(field, "?")), []).append(bool(r["passed"]))
        for name, passed in sorted(groups.items()):
            out[name] = f"{sum(passed)}/{len(passed)}"
    return out
