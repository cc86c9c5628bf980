"""The audit log: every question and the answer it got, append-only, in SQLite in the data directory.

The gateway writes one record per final answer; `lineside audit` and operator accounts over MQTT
(``lineside/v1/audit/query``) read it. Rows are never changed: a trigger refuses every UPDATE, and
deleting is refused for rows younger than a day, so only the retention clean-up removes anything.
"""

from __future__ import annotations

import csv
import io
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import msgspec

from lineside.bus import Bus
from lineside.errors import LinesideError
from lineside.settings import Connection
from lineside.text import terms
from schemas import codec, topics
from schemas.messages import AuditQuery, AuditRecord, AuditReply, AuditSource, GapGroup

FILE_NAME = "audit.sqlite3"

GAP_STATUSES = ("fallback", "rejected")
"""What the knowledge-gap report looks at: questions the documents did not answer."""

GAP_SIMILARITY = 0.5
"""Two questions are one gap when half their content words (Chinese bigrams, line names) are shared
(Jaccard): rewordings of one question share most of them, different machines or faults do not."""

PRUNE_EVERY_S = 3600.0
"""Expired records are removed at most once an hour, on a write."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    request_id TEXT NOT NULL,
    device TEXT NOT NULL,
    line TEXT,
    question TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    answer TEXT NOT NULL,
    sources TEXT NOT NULL,
    model TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    retrieval_ms REAL NOT NULL,
    generation_ms REAL NOT NULL,
    ttft_ms REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit(ts);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_early_delete BEFORE DELETE ON audit
WHEN old.ts > CAST(strftime('%s', 'now') AS REAL) - 86400
BEGIN SELECT RAISE(ABORT, 'audit records younger than a day cannot be deleted'); END;
"""

_COLUMNS = (
    "ts",
    "request_id",
    "device",
    "line",
    "question",
    "status",
    "reason",
    "answer",
    "sources",
    "model",
    "latency_ms",
    "retrieval_ms",
    "generation_ms",
    "ttft_ms",
)


# Built from the fixed column names above; values always go through parameters.
_INSERT = f"INSERT INTO audit({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"  # noqa: S608
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM audit"  # noqa: S608


class AuditError(LinesideError):
    """The audit log cannot be opened or read."""


class AuditLog:
    """One audit database; safe to use from several threads (one connection behind a lock)."""

    def __init__(self, path: Path, *, retention_days: float = 0.0) -> None:
        self.path = path
        self.retention_days = retention_days
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise AuditError(f"cannot open the audit log {path}: {exc}") from exc
        self._lock = threading.Lock()
        self._pruned = 0.0
        self._sources = msgspec.json.Encoder()

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def record(self, r: AuditRecord) -> None:
        """Append one record (and remove expired ones, at most once an hour)."""
        sources = self._sources.encode(r.sources).decode()
        row = [r.ts, r.request_id, r.device, r.line, r.question, r.status, r.reason, r.answer, sources, r.model]
        row += [r.latency_ms, r.retrieval_ms, r.generation_ms, r.ttft_ms]
        with self._lock:
            self._db.execute(_INSERT, row)
            if self.retention_days > 0 and time.time() - self._pruned > PRUNE_EVERY_S:
                self._prune_locked()

    def prune(self) -> int:
        """Remove the records older than the retention period; how many were removed."""
        with self._lock:
            return self._prune_locked()

    def _prune_locked(self) -> int:
        self._pruned = time.time()
        if self.retention_days <= 0:
            return 0
        cutoff = time.time() - max(self.retention_days, 1.0) * 86400
        return self._db.execute("DELETE FROM audit WHERE ts < ?", (cutoff,)).rowcount

    def query(
        self, *, since: float | None = None, device: str | None = None, status: str | None = None, limit: int | None = None
    ) -> list[AuditRecord]:
        """Records oldest first, filtered; with ``limit``, the most recent ``limit`` of them."""
        where, args = [], []
        for clause, value in (("ts >= ?", since), ("device = ?", device), ("status = ?", status)):
            if value is not None:
                where.append(clause)
                args.append(value)
        sql = _SELECT
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts DESC, id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        try:
            with self._lock:
                rows = self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise AuditError(f"cannot read the audit log {self.path}: {exc}") from exc
        return [_record(row) for row in reversed(rows)]

    def gaps(self, *, since: float | None = None) -> list[GapGroup]:
        """The knowledge-gap report since ``since``: see ``group_gaps``."""
        records = [r for status in GAP_STATUSES for r in self.query(since=since, status=status)]
        return group_gaps(records)


def _record(row: Sequence[object]) -> AuditRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["sources"] = msgspec.json.decode(str(values["sources"]), type=list[AuditSource])
    return msgspec.convert(values, AuditRecord)


def similarity(a: set[str], b: set[str]) -> float:
    """Jaccard similarity of two sets of content words (0 when both are empty)."""
    return len(a & b) / len(a | b) if a or b else 0.0


def group_gaps(records: Sequence[AuditRecord]) -> list[GapGroup]:
    """Questions that fell back or were rejected, grouped by similarity (``GAP_SIMILARITY`` of their
    content words, ``lineside.text.terms``), most frequent group first: what the documents are missing.

    Each question joins the most similar group when similar enough, else starts one; questions with
    no text (payloads that were not a question) are left out.
    """
    groups: list[tuple[set[str], list[AuditRecord]]] = []
    by_word: dict[str, list[int]] = {}  # only groups sharing a word can be similar: no all-pairs comparison
    for r in sorted(records, key=lambda r: r.ts, reverse=True):
        if not r.question.strip():
            continue
        words = terms(r.question) or {r.question.strip().casefold()}
        best, best_sim = -1, 0.0
        for gi in sorted({gi for w in words for gi in by_word.get(w, ())}):
            sim = similarity(words, groups[gi][0])
            if sim > best_sim:
                best, best_sim = gi, sim
        if best >= 0 and best_sim >= GAP_SIMILARITY:
            groups[best][1].append(r)
        else:
            for w in words:
                by_word.setdefault(w, []).append(len(groups))
            groups.append((words, [r]))
    out = []
    for _, members in groups:
        wordings = list(dict.fromkeys(m.question for m in members))
        reasons = [reason for reason, _ in Counter(m.reason or m.status for m in members).most_common()]
        out.append(
            GapGroup(question=members[0].question, count=len(members), questions=wordings[:5], reasons=reasons, last_ts=members[0].ts)
        )
    out.sort(key=lambda g: (-g.count, -g.last_ts))
    return out


def to_csv(records: Sequence[AuditRecord]) -> str:
    """Records as CSV with a header row; sources as ``doc (locator); ...``; times in UTC ISO 8601."""
    buf = io.StringIO()
    out = csv.writer(buf)
    out.writerow(["time", *_COLUMNS[1:]])
    for r in records:
        row = [iso(r.ts), r.request_id, r.device, r.line or "", r.question, r.status, r.reason, r.answer]
        row += ["; ".join(f"{s.doc} ({s.locator})" for s in r.sources), r.model]
        row += [f"{r.latency_ms:.1f}", f"{r.retrieval_ms:.1f}", f"{r.generation_ms:.1f}", f"{r.ttft_ms:.1f}"]
        out.writerow(row)
    return buf.getvalue()


def iso(ts: float) -> str:
    """A Unix time as UTC ISO 8601 to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def parse_since(value: str) -> float:
    """``--since``: a date (``2026-11-30``, midnight UTC), a date and time, or ``7d`` / ``12h`` ago."""
    import datetime as dt

    text = value.strip()
    units = {"d": 86400, "h": 3600, "m": 60}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(text[:-1]) * units[text[-1]]
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise AuditError(f"--since {value!r}: give a date (2026-11-30), a date and time (2026-11-30T08:00) or a span (7d, 12h)") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


async def fetch(conn: Connection, query: AuditQuery, timeout_s: float = 10.0) -> AuditReply:
    """Ask the gateway for audit records or the gap report over MQTT, as an operator account
    (``query.reply_to`` is filled in); TimeoutError when no reply comes."""
    import asyncio

    # Over TLS the broker makes an account's client id its name (docs/security.md): so is its inbox.
    client_id = conn.mqtt_username if conn.mqtt_tls and conn.mqtt_username else f"lineside-cli-{uuid.uuid4().hex[:12]}"
    inbox = topics.audit_reply(client_id)
    bus = Bus(conn, client_id=client_id, subscriptions=(inbox,))
    query = msgspec.structs.replace(query, reply_to=inbox)

    async def go() -> AuditReply:
        async with bus:
            await bus.publish(topics.AUDIT_QUERY, codec.encode(query))
            async for m in bus.messages():
                try:
                    reply = msgspec.msgpack.decode(m.payload, type=AuditReply)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
                if reply.request_id == query.request_id:
                    return reply
        raise TimeoutError("the connection closed before the gateway replied")

    return await asyncio.wait_for(go(), timeout_s)
