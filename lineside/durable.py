"""A queue on disk: messages a service has acknowledged to the broker but not finished handling.

A service that takes long over each message (the retriever embedding a document) cannot hold its
acknowledgements until it is done: an unacknowledged message keeps one of the broker's in-flight
slots for that client (20 in Mosquitto), and the client's other messages (searches) would queue
behind them. It puts each such message here first (SQLite, WAL, synchronous FULL), acknowledges
it, and removes it once handled; after a crash or a lost connection it handles what is left.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from lineside.errors import LinesideError


class DurableQueueError(LinesideError):
    """The queue's file cannot be opened."""


class DurableQueue:
    """Payloads in arrival order until ``done``; ``pending`` lists those not done."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # on disk before the broker is told it may forget the message
            self._db.execute("CREATE TABLE IF NOT EXISTS pending (id INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB NOT NULL)")
        except sqlite3.Error as exc:
            raise DurableQueueError(f"cannot open the queue {path}: {exc}") from exc

    def put(self, payload: bytes) -> int:
        """Store ``payload``; returns its id for ``done``."""
        with self._lock:
            cur = self._db.execute("INSERT INTO pending(payload) VALUES (?)", (payload,))
            return int(cur.lastrowid or 0)

    def done(self, item: int) -> None:
        """Forget a handled payload."""
        with self._lock:
            self._db.execute("DELETE FROM pending WHERE id = ?", (item,))

    def pending(self) -> list[tuple[int, bytes]]:
        """(id, payload) of everything not done, oldest first."""
        with self._lock:
            return [(int(i), bytes(p)) for i, p in self._db.execute("SELECT id, payload FROM pending ORDER BY id")]

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()
