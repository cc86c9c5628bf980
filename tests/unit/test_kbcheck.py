"""`lineside kb check`: the vector index against the stored chunks, after a crash between them."""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np

from schemas.messages import Chunk
from services.retriever import kbcheck
from services.retriever.adapters import Index

DIM = 16


def _vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True) * 0.15  # inside the index's byte range


def _chunks(doc: str, n: int, version: str) -> list[Chunk]:
    return [Chunk(locator=f"row {i}", title=doc, text=f"{doc} {version} line {i}: code F-31{i} on WL-2") for i in range(n)]


def _crash_between_commit_and_save(tmp_path):
    """Replace a document with as many chunks as before, then put back the vector file and its stamp
    as they were: what a SIGKILL after SQLite's commit and before the FAISS save leaves."""
    d = tmp_path / "index"
    idx = Index(d, dim=DIM)
    idx.replace("a.csv", "a", "v1", _chunks("a.csv", 3, "v1"), _vectors(3, 1))
    idx.replace("b.md", "b", "v1", _chunks("b.md", 2, "v1"), _vectors(2, 2))
    stamp = idx.meta("vectors_generation")
    shutil.copy(d / "vectors.faiss", tmp_path / "before.faiss")
    idx.replace("a.csv", "a", "v2", _chunks("a.csv", 3, "v2"), _vectors(3, 3))
    idx.close()
    shutil.copy(tmp_path / "before.faiss", d / "vectors.faiss")
    with sqlite3.connect(d / "chunks.sqlite3") as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'vectors_generation'", (stamp,))
    return d


def test_a_consistent_index_checks_clean(tmp_path):
    idx = Index(tmp_path / "index", dim=DIM)
    idx.replace("a.csv", "a", "v1", _chunks("a.csv", 3, "v1"), _vectors(3, 1))
    idx.close()
    report = kbcheck.check(tmp_path / "index")
    assert (report.ok, report.documents, report.chunks, report.vectors) == (True, 1, 3, 3)


def test_a_crash_between_commit_and_vector_save_is_found_and_the_restarted_index_rebuilds(tmp_path):
    d = _crash_between_commit_and_save(tmp_path)
    report = kbcheck.check(d)
    assert not report.ok
    assert any("lacks 3 stored chunks" in p for p in report.problems), report.problems
    # The retriever's next start notices the stamps differ and rebuilds from the chunks.
    idx = Index(d, dim=DIM)
    new_ids = [r[0] for r in idx._db.execute("SELECT id FROM chunks WHERE doc = 'a.csv'")]
    assert set(idx.vector_ranking(_vectors(3, 3)[0], 5)) >= {new_ids[0]}
    idx.close()
    assert kbcheck.check(d).ok


def test_repair_rebuilds_a_missing_or_stale_vector_index(tmp_path):
    d = _crash_between_commit_and_save(tmp_path)
    repaired = kbcheck.repair(d)
    assert repaired.ok, repaired.problems
    assert (repaired.chunks, repaired.vectors) == (5, 5)
    (d / "vectors.faiss").unlink()
    assert kbcheck.check(d).problems == ["the vector index file is missing"]
    assert kbcheck.repair(d).ok


def test_vectors_of_another_version_with_the_same_ids_are_found(tmp_path):
    d = tmp_path / "index"
    idx = Index(d, dim=DIM)
    idx.replace("a.csv", "a", "v1", _chunks("a.csv", 3, "v1"), _vectors(3, 1))
    idx.close()
    with sqlite3.connect(d / "chunks.sqlite3") as db:  # embeddings changed under a file that was not saved again
        for cid, vec in zip([1, 2, 3], _vectors(3, 9), strict=True):
            db.execute("UPDATE chunks SET embedding = ? WHERE id = ?", (vec.tobytes(), cid))
    report = kbcheck.check(d)
    assert any("sampled vectors differ" in p for p in report.problems), report.problems
    assert kbcheck.repair(d).ok
