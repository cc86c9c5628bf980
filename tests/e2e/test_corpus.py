"""The shared evaluation corpora (../shared/corpus-dev, ../shared/corpus-smt) through the running system.

Both run with the same settings: the coverage threshold was calibrated on corpus-dev alone, and
corpus-smt (another plant, half Chinese) checks it unchanged. The figures are printed per
language and per kind of question, with the questions that did not pass.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from lineside.coverage import ENV_PREFIX, CoverageSettings
from lineside.evaluation import load_questions, run, run_retrieval, summary
from lineside.settings import load
from tests.conftest import ROOT, start_stack

pytestmark = [pytest.mark.corpus, pytest.mark.e2e]

CORPORA = {
    # corpus: (end-to-end pass rate, Chinese questions' pass rate, retrieval recall@3) the test holds.
    "corpus-dev": (0.90, 0.83, 0.95),
    "corpus-smt": (0.86, 0.84, 0.95),
}
"""Floors that catch a regression, about two questions under what was measured with the default
model: corpus-dev 49/52 (Chinese 11/12, recall@3 1.00), corpus-smt 45/50 (Chinese 24/26, recall@3
0.98). The quality issue's bar is 90% on each corpus and 85% of the Chinese questions: both
corpora reach it, corpus-smt at the bar itself; runs differ by a question as ties between passages
fall (docs/retrieval.md, "End to end, and the model"), so the floors keep that margin."""


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("corpus", sorted(CORPORA))
def test_corpus_pass_rate(corpus, tmp_path_factory):
    folder = ROOT.parent / "shared" / corpus
    if not (folder / "questions.jsonl").exists():
        pytest.skip(f"the shared evaluation corpus is not at {folder} (CI has it beside the repository)")
    floor, floor_zh, floor_recall = CORPORA[corpus]
    docs = sorted(p for p in folder.iterdir() if p.suffix != ".jsonl" and p.name != "README.md")
    stack = start_stack(tmp_path_factory.mktemp(corpus), docs)
    questions = load_questions(folder / "questions.jsonl")
    cov = load(CoverageSettings, ENV_PREFIX)
    try:
        retrieval = summary(asyncio.run(run_retrieval(stack.conn, questions, settings=cov)), questions)
        results = asyncio.run(run(stack.conn, questions))
    finally:
        stack.stop()
    errors = stack.errors()
    s = summary(results, questions)
    print(f"\n{corpus}, retrieval only: {json.dumps(retrieval)}")
    print(f"{corpus}: {json.dumps(s)}")
    print(
        f"{corpus}, not passed: "
        + json.dumps(
            [{k: r.get(k) for k in ("id", "status", "reason", "missing", "cited", "answer")} for r in results if not r["passed"]],
            ensure_ascii=False,
        )
    )
    assert not errors, "services logged errors:\n" + "\n".join(errors[:20])
    assert retrieval["cited_recall@3"] >= floor_recall, retrieval
    assert s["pass_rate"] >= floor, s
    zh = [r for r, q in zip(results, questions, strict=True) if q.get("lang") == "zh"]
    assert sum(r["passed"] for r in zh) >= floor_zh * len(zh), s
    # Every question gets an answer or a clear status: never silence.
    assert all(r["status"] in ("answered", "fallback") for r in results), [
        r for r in results if r["status"] not in ("answered", "fallback")
    ]
