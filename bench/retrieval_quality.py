"""Retrieval and the coverage decision on the shared corpora, in-process (no broker, no LLM).

For each corpus: ingest every document with the ingest service's own parsing, index it with the
retriever's embedder, search every question as the retriever does, and decide coverage as the
gateway does. Prints recall@1/3/5 of an expected source among the passages, how many answerable
questions would fall back and how many out-of-scope ones would be answered, by language, and the
best-score distribution the coverage threshold is calibrated on.

    .venv/bin/python bench/retrieval_quality.py [--corpus ../shared/corpus-dev ../shared/corpus-smt] [--threshold 0.3] [--show]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402

from lineside.coverage import CoverageSettings, decide  # noqa: E402
from lineside.evaluation import load_questions  # noqa: E402
from lineside.text import compare_form  # noqa: E402
from schemas.messages import IngestDocument  # noqa: E402
from services.ingest.handlers import process  # noqa: E402
from services.llm.handlers import evidence, focus  # noqa: E402
from services.retriever.adapters import Index, load_embedder  # noqa: E402
from services.retriever.handlers import embedding_text, vector_space  # noqa: E402
from services.retriever.search import search  # noqa: E402

TOP_K = 4
"""Passages the gateway asks for (GatewaySettings.top_k)."""


def index_corpus(folder: Path, embedder, directory: Path) -> Index:
    """An index of every document of ``folder``."""
    index = Index(directory, dim=embedder.dim, model=vector_space(embedder.name))
    for path in sorted(folder.iterdir()):
        if path.suffix == ".jsonl" or path.name == "README.md" or not path.is_file():
            continue
        data = path.read_bytes()
        msg = process(IngestDocument(request_id="bench", name=path.name, content=data, sha256=hashlib.sha256(data).hexdigest()), 50 * 2**20)
        index.replace(msg.doc, msg.doc_id, msg.version, msg.chunks, embedder.embed([embedding_text(c.title, c.text) for c in msg.chunks]))
    return index


SWEEP = [round(0.20 + 0.02 * i, 2) for i in range(14)]
"""Thresholds --sweep tries."""


def evaluate(folder: Path, embedder, cov: CoverageSettings, show: bool, sweep: bool = False) -> dict:
    """Figures of one corpus."""
    questions = load_questions(folder / "questions.jsonl")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        index = index_corpus(folder, embedder, Path(tmp))
        index_s = time.perf_counter() - t
        rows = []
        lat = []
        sweeps: dict[float, list[int]] = {}
        for q in questions:
            t = time.perf_counter()
            found = search(index, lambda text: embedder.embed([text])[0], q["question"], TOP_K, 32, today=dt.date.today())
            lat.append((time.perf_counter() - t) * 1000)
            verdict = decide(q["question"], found, cov)
            if sweep:
                for th in SWEEP:
                    v = decide(q["question"], found, msgspec.structs.replace(cov, threshold=th))
                    wrong = (v.reason is None) != q.get("answerable", True)
                    sweeps.setdefault(th, [0, 0])[0 if q.get("answerable", True) else 1] += wrong
            focused = [msgspec.structs.replace(p, text=focus(p.ask or q["question"], p.text)) for p in found.passages]
            quoted = compare_form(" ".join(text for _, text in evidence(q["question"], focused)))
            facts = all(compare_form(m) in quoted for m in q.get("must_contain", []))
            docs = [p.doc for p in found.passages]
            rank = next((i for i, d in enumerate(docs, 1) if d in q.get("expected_sources", [])), None)
            rows.append(
                {
                    "id": q["id"],
                    "lang": q.get("lang", "en"),
                    "kind": q.get("kind", ""),
                    "answerable": q.get("answerable", True),
                    "rank": rank,
                    "facts_quoted": facts,
                    "all_found": all(d in docs for d in q.get("expected_sources", [])),
                    "fallback": verdict.reason,
                    "detail": verdict.detail,
                    "best": found.best_score,
                    "exact": found.exact_match,
                    "docs": docs,
                }
            )
        index.close()
    if show:
        for r in rows:
            bad = (r["answerable"] and (r["fallback"] or r["rank"] is None or not r["facts_quoted"])) or (
                not r["answerable"] and not r["fallback"]
            )
            if bad:
                print(
                    json.dumps(
                        {k: r[k] for k in ("id", "lang", "kind", "rank", "facts_quoted", "fallback", "detail", "best", "docs")},
                        ensure_ascii=False,
                    )
                )
    if sweep:
        print(folder.name, "threshold: answerable fell back / out-of-scope answered")
        print("  " + "  ".join(f"{th:.2f}:{a}/{o}" for th, (a, o) in sorted(sweeps.items())))
    out: dict = {
        "corpus": folder.name,
        "questions": len(rows),
        "index_s": round(index_s, 1),
        "search_p50_ms": round(statistics.median(lat), 1),
    }
    for lang in ("all", "en", "zh"):
        sel = [r for r in rows if lang in ("all", r["lang"])]
        ans = [r for r in sel if r["answerable"]]
        oos = [r for r in sel if not r["answerable"]]
        fig = {f"recall@{k}": round(sum(1 for r in ans if r["rank"] and r["rank"] <= k) / max(1, len(ans)), 3) for k in (1, 3)}
        multi = [r for r in ans if r["kind"] == "multi-doc"]
        if multi:
            fig["multi_doc_all_sources"] = f"{sum(r['all_found'] for r in multi)}/{len(multi)}"
        fig["facts_in_evidence"] = f"{sum(1 for r in ans if r['facts_quoted'] and not r['fallback'])}/{len(ans)}"
        fig["answerable_fell_back"] = f"{sum(1 for r in ans if r['fallback'])}/{len(ans)}"
        fig["oos_answered"] = f"{sum(1 for r in oos if not r['fallback'])}/{len(oos)}"
        # A retrieval pass (docs/retrieval.md, "What each change measured"): an answerable question
        # with an expected source among the passages, no fallback and every expected fact quoted;
        # an out-of-scope one that falls back.
        fig["passes"] = (
            f"{sum(1 for r in ans if r['rank'] and not r['fallback'] and r['facts_quoted']) + sum(1 for r in oos if r['fallback'])}/{len(sel)}"
        )
        fig["retrieved_and_kept"] = (
            f"{sum(1 for r in ans if r['rank'] and not r['fallback']) + sum(1 for r in oos if r['fallback'])}/{len(sel)}"
        )
        best_ans = [r["best"] for r in ans if r["best"] is not None and not r["exact"]]
        best_oos = [r["best"] for r in oos if r["best"] is not None]
        if best_ans:
            fig["best_answerable(no exact) min/p10/median"] = [
                round(min(best_ans), 3),
                round(sorted(best_ans)[len(best_ans) // 10], 3),
                round(statistics.median(best_ans), 3),
            ]
        if best_oos:
            fig["best_out_of_scope max/median"] = [round(max(best_oos), 3), round(statistics.median(best_oos), 3)]
        out[lang] = fig
    return out


def main() -> None:
    """Run every corpus and print its figures as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", nargs="+", default=[str(ROOT.parent / "shared" / "corpus-dev"), str(ROOT.parent / "shared" / "corpus-smt")])
    ap.add_argument("--threshold", type=float, default=None, help="coverage threshold (default: the setting's default)")
    ap.add_argument("--show", action="store_true", help="print the questions that do not pass (retrieval, coverage or the quoted facts)")
    ap.add_argument("--sweep", action="store_true", help="print coverage errors at a range of thresholds")
    args = ap.parse_args()
    cov = CoverageSettings() if args.threshold is None else CoverageSettings(threshold=args.threshold)
    t = time.perf_counter()
    embedder = load_embedder(threads=1)
    print(f"embedder {embedder.name} loaded in {time.perf_counter() - t:.1f} s; threshold {cov.threshold}")
    for folder in args.corpus:
        print(json.dumps(evaluate(Path(folder), embedder, cov, args.show, args.sweep), ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
