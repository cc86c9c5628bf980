"""Earlier versions of each document, kept beside the live one for `lineside kb history` and
`lineside kb rollback`.

When a document is replaced by a new version, its live chunks (text, locators, embeddings) are
copied into ``doc_history`` in the same transaction, so an earlier version can be made live again
without the original file and without embedding anything. Only the live version is searched; the
newest ``keep`` earlier versions of each document are kept.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

import msgspec
import numpy as np

from lineside.errors import LinesideError
from schemas.messages import Chunk

SCHEMA = """
CREATE TABLE IF NOT EXISTS doc_history (
    doc TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    version TEXT NOT NULL,
    chunks INTEGER NOT NULL,
    ingested_at REAL NOT NULL,
    replaced_at REAL NOT NULL,
    body BLOB NOT NULL,                 -- MessagePack: [[locator, title, text, line, embedding], ...]
    PRIMARY KEY (doc, version)
);
"""


class VersionError(LinesideError):
    """No such document or version to roll back to."""


@dataclass(frozen=True)
class Version:
    """One version of a document: the live one, or an earlier one kept."""

    version: str
    ingested_at: float
    chunks: int
    live: bool
    replaced_at: float | None = None


def keep_old(cur: sqlite3.Cursor, doc: str, new_version: str, keep: int, now: float | None = None) -> None:
    """Inside the transaction that replaces ``doc``: copy its live version into the history (unless
    it is ``new_version`` itself), drop ``new_version`` from the history (it becomes live), and keep
    the newest ``keep`` earlier versions."""
    cur.execute("DELETE FROM doc_history WHERE doc = ? AND version = ?", (doc, new_version))
    live = cur.execute("SELECT doc_id, version, chunks, ingested_at FROM docs WHERE doc = ?", (doc,)).fetchone()
    if keep <= 0 or live is None or live[1] == new_version:
        return
    rows = cur.execute("SELECT locator, title, text, line, embedding FROM chunks WHERE doc = ? ORDER BY id", (doc,)).fetchall()
    body = msgspec.msgpack.encode([list(r) for r in rows])
    cur.execute(
        "INSERT OR REPLACE INTO doc_history(doc, doc_id, version, chunks, ingested_at, replaced_at, body) VALUES (?,?,?,?,?,?,?)",
        (doc, live[0], live[1], live[2], live[3], time.time() if now is None else now, body),
    )
    cur.execute(
        "DELETE FROM doc_history WHERE doc = ? AND version NOT IN"
        " (SELECT version FROM doc_history WHERE doc = ? ORDER BY replaced_at DESC LIMIT ?)",
        (doc, doc, keep),
    )


def forget(cur: sqlite3.Cursor, doc: str) -> None:
    """Inside the transaction that deletes ``doc``: its earlier versions go too."""
    cur.execute("DELETE FROM doc_history WHERE doc = ?", (doc,))


def history(db: sqlite3.Connection, doc: str) -> list[Version]:
    """The live version of ``doc`` first, then the earlier ones kept, newest first."""
    out = [
        Version(version=v, ingested_at=t, chunks=n, live=True)
        for v, t, n in db.execute("SELECT version, ingested_at, chunks FROM docs WHERE doc = ?", (doc,))
    ]
    out += [
        Version(version=v, ingested_at=t, chunks=n, live=False, replaced_at=r)
        for v, t, n, r in db.execute(
            "SELECT version, ingested_at, chunks, replaced_at FROM doc_history WHERE doc = ? ORDER BY replaced_at DESC", (doc,)
        )
    ]
    return out


def earlier(db: sqlite3.Connection, doc: str, to: str | None) -> tuple[str, str, list[Chunk], np.ndarray]:
    """(doc_id, version, chunks, vectors) of the earlier version to roll back to: ``to`` (the
    version or the first characters of its sha256), else the newest earlier one."""
    kept = history(db, doc)
    if not kept:
        raise VersionError(f"no document {doc} in the knowledge base (see `lineside kb list`)")
    candidates = [v for v in kept if not v.live]
    if to:
        candidates = [v for v in kept if v.version.startswith(to)]
        if len(candidates) > 1:
            raise VersionError(f"{to} matches {len(candidates)} versions of {doc}: give more of its sha256")
        if candidates and candidates[0].live:
            raise VersionError(f"version {to} of {doc} is the live one already")
    if not candidates:
        what = f"no version {to} of {doc}" if to else f"no earlier version of {doc} is kept"
        raise VersionError(f"{what} (see `lineside kb history {doc}`)")
    version = candidates[0].version
    doc_id, body = db.execute("SELECT doc_id, body FROM doc_history WHERE doc = ? AND version = ?", (doc, version)).fetchone()
    rows = msgspec.msgpack.decode(body)
    chunks = [Chunk(locator=r[0], title=r[1], text=r[2], line=r[3]) for r in rows]
    vectors = np.vstack([np.frombuffer(r[4], dtype=np.float32) for r in rows]) if rows else np.zeros((0, 0), dtype=np.float32)
    return str(doc_id), version, chunks, vectors
