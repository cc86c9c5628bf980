"""`lineside kb check [--repair]`: do the knowledge base's chunk store and vector index agree?

The chunks in SQLite (text, locators, embeddings) are the source of truth; the FAISS file and the
two full-text tables are derived from them. A SIGKILL between a document's commit and the FAISS
save leaves the file behind the chunks; the retriever notices at its next start (the generation
stamps in the meta table) and rebuilds. This module checks the files on disk, and ``repair``
rebuilds every derived part from the stored chunks.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from lineside.errors import LinesideError

SAMPLE = 256
"""Vectors compared with their stored embedding (spread over the index): a file saved from another
model or another version shows in any of them."""
MIN_COSINE = 0.98
"""One byte per component (adapters.VECTOR_RANGE) keeps a vector's cosine to itself above 0.99."""


class KbCheckError(LinesideError):
    """The knowledge base cannot be read at all."""


@dataclass
class KbReport:
    """What `kb check` found."""

    documents: int = 0
    chunks: int = 0
    vectors: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems


def _meta(db: sqlite3.Connection, key: str) -> str:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return str(row[0]) if row else ""


def check(directory: Path) -> KbReport:
    """Compare the vector index, the full-text tables and the document list with the stored chunks."""
    path = directory / "chunks.sqlite3"
    if not path.exists():
        raise KbCheckError(f"no knowledge base in {directory} (set LINESIDE_DATA_DIR to the box's data directory)")
    rep = KbReport()
    try:
        db = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise KbCheckError(f"cannot open {path}: {exc}") from exc
    try:
        db.execute("BEGIN")  # one snapshot of the chunks while the retriever may be writing
        integrity = db.execute("PRAGMA quick_check").fetchone()[0]
        if integrity != "ok":
            rep.problems.append(f"the chunk store is damaged: {integrity} (restore a backup)")
            return rep
        rows = db.execute("SELECT id, embedding FROM chunks ORDER BY id").fetchall()
        rep.chunks = len(rows)
        rep.documents = db.execute("SELECT COUNT(*) FROM docs").fetchone()[0]
        for doc, listed, held in db.execute(
            "SELECT d.doc, d.chunks, (SELECT COUNT(*) FROM chunks c WHERE c.doc = d.doc) FROM docs d ORDER BY d.doc"
        ):
            if listed != held:
                rep.problems.append(f"document {doc} lists {listed} chunks but {held} are stored")
        orphans = db.execute("SELECT COUNT(*) FROM chunks WHERE doc NOT IN (SELECT doc FROM docs)").fetchone()[0]
        if orphans:
            rep.problems.append(f"{orphans} chunks belong to no listed document")
        fts = db.execute("SELECT COUNT(*) FROM chunks_fts_docsize").fetchone()[0]
        lex = db.execute("SELECT COUNT(*) FROM chunks_lex").fetchone()[0]
        if fts != rep.chunks or lex != rep.chunks:
            rep.problems.append(f"the full-text tables hold {fts} and {lex} chunks, not {rep.chunks}")
        generation, saved_for = _meta(db, "generation"), _meta(db, "vectors_generation")
        faiss_path = directory / "vectors.faiss"
        if not faiss_path.exists():
            if rep.chunks:
                rep.problems.append("the vector index file is missing")
            return rep
        idx = faiss.read_index(str(faiss_path))
        rep.vectors = int(idx.ntotal)
        if saved_for != generation:
            rep.problems.append(
                f"the vector index was saved for version {saved_for or '-'} of the chunks, which are at {generation or '-'}"
            )
        ids = faiss.vector_to_array(idx.id_map) if isinstance(idx, faiss.IndexIDMap2) else np.zeros(0, dtype=np.int64)
        stored = np.array([r[0] for r in rows], dtype=np.int64)
        missing = np.setdiff1d(stored, ids)
        extra = np.setdiff1d(ids, stored)
        if missing.size or extra.size:
            rep.problems.append(f"the vector index lacks {missing.size} stored chunks and holds {extra.size} chunks no longer stored")
        elif rows:
            by_id = dict(rows)
            picks = stored[np.linspace(0, len(stored) - 1, min(SAMPLE, len(stored))).astype(int)]
            bad = 0
            for cid in picks:
                want = np.frombuffer(by_id[int(cid)], dtype=np.float32)
                have = idx.reconstruct(int(cid))
                cos = float(want @ have) / (float(np.linalg.norm(want) * np.linalg.norm(have)) or 1.0)
                bad += cos < MIN_COSINE
            if bad:
                rep.problems.append(f"{bad} of {len(picks)} sampled vectors differ from their stored embedding")
        return rep
    finally:
        db.close()


def repair(directory: Path) -> KbReport:
    """Rebuild the vector index and the full-text tables from the stored chunks; then check again.

    Run it with the retriever stopped (it keeps its own copy of the vectors in memory and would
    save that copy again); a retriever started afterwards loads the repaired files.
    """
    from services.retriever.adapters import Index

    path = directory / "chunks.sqlite3"
    if not path.exists():
        raise KbCheckError(f"no knowledge base in {directory} (set LINESIDE_DATA_DIR to the box's data directory)")
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT length(embedding) FROM chunks LIMIT 1").fetchone()
        db.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')")
        db.execute("DELETE FROM chunks_lex")  # Index rebuilds it when its count differs
        db.execute("UPDATE docs SET chunks = (SELECT COUNT(*) FROM chunks c WHERE c.doc = docs.doc)")
    (directory / "vectors.faiss").unlink(missing_ok=True)
    dim = row[0] // 4 if row else 512
    Index(directory, dim=dim).close()  # rebuilds what is missing or stale from the chunks
    return check(directory)
