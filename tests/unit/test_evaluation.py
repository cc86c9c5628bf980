"""Judging answers against a question set: what counts as a pass."""

from lineside.evaluation import judge, normalise, summary

Q = {"id": "q1", "answerable": True, "expected_sources": ["m.pdf"], "must_contain": ["62 N·m", "M10"]}
OOS = {"id": "q2", "answerable": False, "expected_sources": [], "must_contain": []}


def _ans(status="answered", text="Torque 62 N·m on M10 bolts.", docs=("m.pdf",)):
    return {"status": status, "answer": text, "sources": [{"doc": d} for d in docs]}


def test_normalise_collapses_whitespace_and_cjk_breaks():
    assert normalise("45  N·m\n") == "45 n·m"
    assert normalise("传感器\n遮挡") == "传感器遮挡"


def test_answer_passes_with_source_and_facts():
    assert judge(Q, _ans())["passed"]


def test_missing_fact_or_wrong_source_fails():
    assert judge(Q, _ans(text="Torque 62 N·m."))["missing"] == ["M10"]
    v = judge(Q, _ans(docs=("other.pdf", "x.pdf")))
    assert not v["passed"]
    assert v["rank"] is None
    assert judge(Q, _ans(docs=("other.pdf", "m.pdf")))["rank"] == 2


def test_out_of_scope_passes_only_on_fallback():
    assert judge(OOS, _ans(status="fallback", text="Please contact technical support.", docs=()))["passed"]
    assert not judge(OOS, _ans())["passed"]


def test_summary_figures():
    results = [dict(judge(Q, _ans()), latency_ms=100.0), dict(judge(OOS, _ans(status="fallback", docs=())), latency_ms=10.0)]
    s = summary(results, [Q, OOS])
    assert s["pass_rate"] == 1.0
    assert s["cited_recall@1"] == 1.0
    assert s["fallback_precision"] == 1.0
    assert s["fallback_recall"] == 1.0
    assert s["answerable_fell_back"] == 0
