"""Retrieval speed at plant scale: a synthetic 100k-chunk index, real query embeddings.

Chunk texts are synthetic table rows and sentences (codes, part numbers, dates, Chinese);
their vectors are random unit vectors (embedding 100k texts would take minutes and does not
change search cost). Questions are embedded with the retriever's real model. Prints p50/p95 of
embedding, of the whole hybrid search, and of the raw FAISS and FTS5 calls it is built from.

    .venv/bin/python bench/retrieval_100k.py [--chunks 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # as the retriever service runs (services/retriever/__main__.py)

import numpy as np  # noqa: E402

from lineside.text import lexical_terms  # noqa: E402
from schemas.messages import Chunk  # noqa: E402
from services.retriever.adapters import Index, load_embedder  # noqa: E402
from services.retriever.handlers import date_strings, exact_groups, fts_all_query, fts_query  # noqa: E402
from services.retriever.search import MAX_TERM_DF, MAX_TERM_SHARE, hybrid_search, search  # noqa: E402
from services.retriever.settings import RetrieverSettings  # noqa: E402

MACHINES = ["VX-90 Filler", "BF-8 Capper", "TR-55 Labeler", "KT-410 Conveyor", "PX-200 Press", "SW-12 Wrapper"]
WORDS = [
    "valve",
    "sensor",
    "torque",
    "bearing",
    "chain",
    "seal",
    "pump",
    "motor",
    "gearbox",
    "guard",
    "bracket",
    "tension",
    "nozzle",
    "clutch",
    "filter",
    "grease",
    "inverter",
]
ZH = ["贴标机", "灌装机", "卷带张力", "热熔胶", "润滑", "更换", "扭矩", "传感器"]


def row(rng: random.Random, i: int) -> str:
    """A synthetic log row or fault-table row."""
    m = rng.choice(MACHINES)
    code = f"E-{rng.randint(100, 999)}"
    date = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    words = " ".join(rng.choice(WORDS) for _ in range(12))
    zh = "".join(rng.choice(ZH) for _ in range(4))
    return f"date: {date}; line: Line {rng.randint(1, 3)}; machine: {m}; fault_code: {code}; cause: {words}; part HP-{i % 9000:04d}-B; {zh}"


def pct(v: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(v)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def main() -> int:
    """Build the index, run the queries, print the figures."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    rng = random.Random(7)
    nprng = np.random.default_rng(7)
    embedder = load_embedder(RetrieverSettings().threads)
    index = Index(Path(tempfile.mkdtemp(prefix="lineside-100k-")) / "index", dim=embedder.dim)
    t = time.perf_counter()
    per_doc = 500
    for d in range(args.chunks // per_doc):
        chunks = [Chunk(locator=f"row {r + 2}", title=f"log_{d}.csv", text=row(rng, d * per_doc + r)) for r in range(per_doc)]
        vecs = nprng.normal(size=(per_doc, embedder.dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        index.replace(f"log_{d}.csv", f"d{d}", "v1", chunks, vecs)
    build_s = time.perf_counter() - t
    print(f"built {len(index)} chunks in {build_s:.1f} s ({len(index) / build_s:.0f} chunks/s, SQLite + FTS5 x2 + FAISS, no embedding)")

    questions = [
        f"What does fault E-{rng.randint(100, 999)} mean on the {rng.choice(MACHINES)}?"
        if i % 3 == 0
        else f"Why did Line {rng.randint(1, 3)} stop on 2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}?"
        if i % 3 == 1
        else f"{rng.choice(ZH)}的{rng.choice(ZH)}是多少？"
        for i in range(args.queries)
    ]
    embed_ms, search_ms, faiss_ms, fts_ms = [], [], [], []
    for q in questions:
        t0 = time.perf_counter()
        vec = embedder.embed([q])[0]
        t1 = time.perf_counter()
        hybrid_search(index, vec, q, 4, 32)
        t2 = time.perf_counter()
        index.vector_ranking(vec, 32)
        t3 = time.perf_counter()
        index.lexical_ranking(fts_query(index.informative(lexical_terms(q), MAX_TERM_SHARE, MAX_TERM_DF)), 32)
        if date_strings(q):  # as hybrid_search: a date question's exact terms on the trigram index
            index.substring_all_ranking(exact_groups(q), 32)
        else:
            index.lexical_ranking(fts_all_query(exact_groups(q)), 32)
        t4 = time.perf_counter()
        embed_ms.append((t1 - t0) * 1000)
        search_ms.append((t2 - t1) * 1000)
        faiss_ms.append((t3 - t2) * 1000)
        fts_ms.append((t4 - t3) * 1000)
    total = [a + b for a, b in zip(embed_ms, search_ms, strict=True)]
    # As the service runs it (services/retriever/search.py: search): a question whose best passage
    # is a log row and which names no code of its own also looks up the codes of that row.
    service_ms = []
    for q in questions:
        t0 = time.perf_counter()
        search(index, lambda text: embedder.embed([text])[0], q, 4, 32)
        service_ms.append((time.perf_counter() - t0) * 1000)
    # Questions that ask two things: the service searches the whole question and then each ask
    # (services/retriever/search.py: search), one embedding and one hybrid search more per ask.
    multi = [
        f"Line {rng.randint(1, 3)} stopped on 2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}. "
        f"What does the fault code logged mean, and where is the spare part kept?"
        for _ in range(args.queries // 4)
    ]
    multi_ms = []
    for q in multi:
        t0 = time.perf_counter()
        search(index, lambda text: embedder.embed([text])[0], q, 4, 32)
        multi_ms.append((time.perf_counter() - t0) * 1000)
    print(f"\n{len(questions)} queries against {len(index)} chunks (FAISS flat scan, float16 vectors), {os.cpu_count()} cores")
    print(f"{'':46}{'p50 ms':>9}{'p95 ms':>9}")
    for name, v in (
        (f"embed question ({embedder.name.split('/')[0]})", embed_ms),
        ("hybrid search (all three rankings)", search_ms),
        ("  raw FAISS search, k=32", faiss_ms),
        ("  raw FTS5: BM25 words + exact terms", fts_ms),
        ("retrieval total (embed + search)", total),
        ("retrieval as the service runs it (search())", service_ms),
        ("two-ask question, total (3 x embed + search)", multi_ms),
    ):
        print(f"{name:46}{statistics.median(v):9.1f}{pct(v, 0.95):9.1f}")
    print(
        f"hybrid search / (raw FAISS + raw FTS5), medians: {statistics.median(search_ms) / (statistics.median(faiss_ms) + statistics.median(fts_ms)):.2f}"
    )
    index.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
