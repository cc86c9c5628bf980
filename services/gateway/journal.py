"""The gateway's question journal: every accepted question on disk until its answer was sent.

A question is written here (SQLite in WAL mode, synchronous FULL: on disk before the commit
returns, through a SIGKILL or a power cut) before the gateway acknowledges it to the broker, and
marked finished once its answer was published. After a crash or a lost broker the gateway answers
what is still pending; a question that arrives again (a QoS 1 redelivery, a device resending an
unacknowledged publish) finds its key here and gets no second answer.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from lineside.bus import Inbound
from lineside.errors import LinesideError

FILE_NAME = "gateway-journal.db"
"""In the data directory, next to the knowledge base: a backup of the data directory holds it."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS questions (
    key TEXT PRIMARY KEY,            -- '<device or ->/<request id>': what makes a question a duplicate
    request_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    response_topic TEXT,
    correlation_data BLOB,
    content_type TEXT,
    expiry_s INTEGER,
    received_unix REAL NOT NULL,
    finished_unix REAL,              -- NULL while the question waits for its answer
    status TEXT
);
CREATE INDEX IF NOT EXISTS questions_pending ON questions (finished_unix);
"""


class JournalError(LinesideError):
    """The journal file cannot be opened or written."""


class Journal:
    """Questions accepted and not yet answered, and those answered within ``keep_s`` (to spot duplicates)."""

    def __init__(self, path: Path, keep_s: float) -> None:
        self.path = path
        self.keep_s = keep_s
        self._lock = threading.Lock()
        self._accepted = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is synced at every commit, so an acknowledged question survives a power cut.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open the gateway's question journal {path}: {exc}") from exc

    def accept(self, key: str, request_id: str, m: Inbound, now: float | None = None) -> bool:
        """Record a question; False when ``key`` is already here (pending or recently answered)."""
        now = time.time() if now is None else now
        with self._lock:
            self._accepted += 1
            if self._accepted % 500 == 1:
                self._prune(now)
            # A key answered longer than keep_s ago is a new question (a device that reuses its ids).
            cur = self._db.execute(
                "INSERT INTO questions (key, request_id, topic, payload, response_topic, correlation_data,"
                " content_type, expiry_s, received_unix) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET topic = excluded.topic, payload = excluded.payload,"
                " response_topic = excluded.response_topic, correlation_data = excluded.correlation_data,"
                " content_type = excluded.content_type, expiry_s = excluded.expiry_s, received_unix = excluded.received_unix,"
                " finished_unix = NULL, status = NULL WHERE finished_unix IS NOT NULL AND finished_unix < ?",
                (
                    key,
                    request_id,
                    m.topic,
                    m.payload,
                    m.response_topic,
                    m.correlation_data,
                    m.content_type,
                    m.message_expiry_s,
                    now,
                    now - self.keep_s,
                ),
            )
            return cur.rowcount == 1

    def finish(self, key: str, status: str, now: float | None = None) -> None:
        """Mark a question answered (its answer was published, or nobody waits for one any more)."""
        with self._lock:
            self._db.execute(
                "UPDATE questions SET finished_unix = ?, status = ? WHERE key = ?", (time.time() if now is None else now, status, key)
            )

    def pending(self, now_mono: float | None = None, now: float | None = None) -> list[tuple[Inbound, str, str]]:
        """The questions still waiting for an answer, oldest first: (message, request id, key).

        ``received_at`` is set back by the time since the question arrived, so an answer's
        latency and the question's deadline count from its arrival, not from the restart.
        """
        now_mono = time.monotonic() if now_mono is None else now_mono
        now = time.time() if now is None else now
        with self._lock:
            rows = self._db.execute(
                "SELECT key, request_id, topic, payload, response_topic, correlation_data, content_type, expiry_s, received_unix"
                " FROM questions WHERE finished_unix IS NULL ORDER BY received_unix"
            ).fetchall()
        out = []
        for key, rid, topic, payload, response_topic, corr, ctype, expiry, received in rows:
            m = Inbound(
                topic=topic,
                payload=bytes(payload),
                response_topic=response_topic,
                correlation_data=bytes(corr) if corr is not None else None,
                content_type=ctype,
                message_expiry_s=expiry,
                received_at=now_mono - max(0.0, now - received),
            )
            out.append((m, rid, key))
        return out

    def _prune(self, now: float) -> None:
        self._db.execute("DELETE FROM questions WHERE finished_unix IS NOT NULL AND finished_unix < ?", (now - self.keep_s,))

    def close(self) -> None:
        """Close the database (the WAL is checkpointed into the main file)."""
        with self._lock:
            self._db.close()
