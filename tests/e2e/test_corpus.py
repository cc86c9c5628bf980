"""The shared evaluation corpus (../shared/corpus-dev) through the running system."""

from __future__ import annotations

import asyncio
import json

import pytest

from lineside.evaluation import load_questions, run, run_retrieval, summary
from tests.conftest import CORPUS, start_stack

pytestmark = [pytest.mark.corpus, pytest.mark.e2e]

PASS_RATE = 0.90
"""The retrieval issue's bar (the ingest issue asked for 85%, the question-path issue for 80%).
Measured 49 of 52 (94.2%) at 6fdf6e0, 9ac59dd and a599706 (five runs), and 48 once (a clean-clone
CI run at a599706): not fully deterministic, one question can flip; the failures are printed.
The three that fail: an answer that takes a tester's range for the acceptance range, a Chinese
question whose isolator is in an English table, and one out-of-scope Chinese question that looks
answerable. See README "Measured" and docs/retrieval.md."""


@pytest.mark.timeout(1800)
def test_dev_corpus_pass_rate(tmp_path_factory):
    if not (CORPUS / "questions.jsonl").exists():
        pytest.skip(f"the shared evaluation corpus is not at {CORPUS} (CI has it beside the repository)")
    docs = sorted(p for p in CORPUS.iterdir() if p.suffix not in (".jsonl",) and p.name != "README.md")
    stack = start_stack(tmp_path_factory.mktemp("corpus"), docs)
    questions = load_questions(CORPUS / "questions.jsonl")
    try:
        retrieval = summary(asyncio.run(run_retrieval(stack.conn, questions)), questions)
        results = asyncio.run(run(stack.conn, questions))
    finally:
        stack.stop()
    print(f"\ncorpus, retrieval only: {json.dumps(retrieval)}")
    # Retrieval alone (no LLM): the bar is recall@3 >= 0.95; measured 1.0 (41 of 41).
    assert retrieval["cited_recall@3"] >= 0.95, retrieval
    assert retrieval["fallback_recall"] >= 0.9, retrieval
    assert retrieval["answerable_fell_back"] <= 1, retrieval
    s = summary(results, questions)
    report = "\n".join(json.dumps({k: r[k] for k in ("id", "passed", "status", "cited", "missing")}, ensure_ascii=False) for r in results)
    print(f"\ncorpus: {json.dumps(s)}")
    print(
        "corpus, not passed: "
        + json.dumps([{k: r[k] for k in ("id", "status", "missing")} for r in results if not r["passed"]], ensure_ascii=False)
    )
    assert s["pass_rate"] >= PASS_RATE, f"{s}\n{report}"
    assert s["fallback_recall"] >= 0.9, f"out-of-scope questions answered:\n{report}"
    assert s["cited_recall@3"] >= 0.85, f"answers cite no expected source:\n{report}"
