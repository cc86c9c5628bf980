"""The shared evaluation corpus (../shared/corpus-dev) through the running system."""

from __future__ import annotations

import asyncio
import json

import pytest

from lineside.evaluation import load_questions, run, run_retrieval, summary
from tests.conftest import CORPUS, start_stack

pytestmark = [pytest.mark.corpus, pytest.mark.e2e]

PASS_RATE = 0.65
"""A regression floor, not the goal. The question-path issue asks for 80%; with the default
0.5B model this system measures 71% (37/52) on this machine, deterministic under greedy
decoding (52% before answers were followed by the quoted source lines): retrieval finds an
expected source in the top 3 for 40 of 41 answerable questions and 10 of 11 out-of-scope
questions fall back, but the model misreads or paraphrases facts and the quoted lines are
sometimes the wrong ones. Raise this floor as generation improves; see README "Measured"."""


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
    # Retrieval alone (no LLM): the bar is recall@3 >= 0.95; measured 0.98 (40 of 41).
    assert retrieval["cited_recall@3"] >= 0.95, retrieval
    assert retrieval["fallback_recall"] >= 0.9, retrieval
    assert retrieval["answerable_fell_back"] <= 1, retrieval
    s = summary(results, questions)
    report = "\n".join(json.dumps({k: r[k] for k in ("id", "passed", "status", "cited", "missing")}, ensure_ascii=False) for r in results)
    print(f"\ncorpus: {json.dumps(s)}")
    assert s["pass_rate"] >= PASS_RATE, f"{s}\n{report}"
    assert s["fallback_recall"] >= 0.9, f"out-of-scope questions answered:\n{report}"
    assert s["cited_recall@3"] >= 0.85, f"answers cite no expected source:\n{report}"
