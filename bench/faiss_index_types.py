"""Which FAISS index for how many chunks: search time and recall of the candidates each index
type returns, against the exact flat scan, on the same vectors.

Vectors are unit-length 512-d (the Universal Sentence Encoder's size). Real embeddings cluster; random
ones are the hard case for approximate indexes, so the recall here is a lower bound.

    .venv/bin/python bench/faiss_index_types.py [--sizes 10000 100000] [--queries 200] [--k 32]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DIM = 512


def pct(v: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(v)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def clustered(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors around 2000 centres: closer to real text embeddings than uniform noise."""
    centres = rng.normal(size=(2000, DIM)).astype(np.float32)
    v = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def build(kind: str, vecs: np.ndarray) -> faiss.Index:
    """An index of ``kind`` holding ``vecs``."""
    n = len(vecs)
    if kind == "Flat":
        idx = faiss.IndexFlatIP(DIM)
    elif kind == "SQ8":
        idx = faiss.IndexScalarQuantizer(DIM, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        idx.train(vecs)
    elif kind == "SQ8u":  # what the retriever uses: one byte per component on a fixed range, no training on data
        from services.retriever.adapters import VECTOR_RANGE

        idx = faiss.IndexScalarQuantizer(DIM, faiss.ScalarQuantizer.QT_8bit_uniform, faiss.METRIC_INNER_PRODUCT)
        idx.train(np.array([[-VECTOR_RANGE] * DIM, [VECTOR_RANGE] * DIM], dtype=np.float32))
    elif kind == "SQfp16":
        idx = faiss.IndexScalarQuantizer(DIM, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    elif kind.startswith("IVF"):
        nlist = max(16, int(4 * np.sqrt(n)))
        idx = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, nlist, faiss.METRIC_INNER_PRODUCT)
        idx.train(vecs[: min(n, nlist * 64)])
        idx.nprobe = int(kind.split("-")[1])
    elif kind == "HNSW32":
        idx = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
        idx.hnsw.efSearch = 64
    else:
        raise ValueError(kind)
    idx.add(vecs)
    return idx


def main() -> int:
    """Print search p50/p95, build time and recall@k against Flat for each index type and size."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=32)
    args = ap.parse_args()
    rng = np.random.default_rng(3)
    print(f"FAISS {faiss.__version__}, {faiss.omp_get_max_threads()} OpenMP threads, k={args.k}, one query at a time")
    print(f"{'size':>8} {'index':10}{'build s':>9}{'p50 ms':>9}{'p95 ms':>9}{'recall@k':>10}")
    for n in args.sizes:
        vecs = clustered(n + args.queries, rng)
        base, queries = vecs[:n], vecs[n:]
        truth = None
        for kind in ("Flat", "SQfp16", "SQ8", "SQ8u", "IVF-8", "IVF-32", "HNSW32"):
            t = time.perf_counter()
            idx = build(kind, base)
            build_s = time.perf_counter() - t
            times, found = [], []
            for q in queries:
                t = time.perf_counter()
                _, ids = idx.search(q.reshape(1, -1), args.k)
                times.append((time.perf_counter() - t) * 1000)
                found.append(set(ids[0].tolist()))
            if truth is None:
                truth = found
            recall = statistics.mean(len(f & t) / args.k for f, t in zip(found, truth, strict=True))
            print(f"{n:>8} {kind:10}{build_s:9.2f}{statistics.median(times):9.2f}{pct(times, 0.95):9.2f}{recall:10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
