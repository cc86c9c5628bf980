"""Piecewise transfers: pieces of a document are appended to a spool file under <data>/ingest/spool.

The decisions (order, duplicates, size, checksum) are ``handlers.Reassembly``'s; this module owns
the files. A transfer ends as ``Assembled`` (every piece in, checksum matched: the spool file is
handed to the parse worker, which removes it) or ``Failed`` (its spool file is already removed).
Each transfer also has a small record (request id, name) in ``<spool>-journal`` from its first piece
until the service has handed the document on or reported it failed: a service killed in between
finds the records at its next start and reports those documents failed, so no sender waits forever.
Safe to call from worker threads: every public method holds one lock.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from lineside.errors import DocumentError
from schemas.messages import IngestPart
from services.ingest.handlers import Reassembly

REMEMBER_FINISHED = 4096
"""Request ids of finished transfers kept to ignore their late duplicates (QoS 1 may redeliver a
piece after the transfer ended); a few thousand cover any realistic batch at ~100 bytes each."""


@dataclass(frozen=True, slots=True)
class Assembled:
    """A document whose pieces have all arrived and whose sha256 matched; ``path`` holds it."""

    request_id: str
    name: str
    sha256: str
    size: int
    line: str | None
    path: Path
    pieces: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class Failed:
    """A transfer that was refused or broke; its spool file is gone."""

    request_id: str
    name: str
    reason: str


@dataclass(slots=True)
class _Open:
    state: Reassembly
    path: Path
    file: BinaryIO
    last_at: float


class Transfers:
    """The documents being received piecewise, each in its own spool file."""

    def __init__(
        self, spool: Path, *, max_bytes: int, stall_s: float, max_active: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.spool = spool
        self.max_bytes = max_bytes
        self.stall_s = stall_s
        self.max_active = max_active
        self._clock = clock
        self._open: dict[str, _Open] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self.journal = spool.parent / f"{spool.name}-journal"
        """One record per transfer not yet handed on (``<hash of request id>.json``)."""
        self.interrupted: list[Failed] = []
        """Transfers an earlier run had taken and never finished (filled by ``clear``), to report failed."""

    def clear(self) -> int:
        """Create the spool directory and remove what an earlier run left in it; return how many spool files.

        The transfers an earlier run had not finished are put in ``interrupted`` (and their late
        pieces are ignored from now on): the service reports them failed once connected.
        """
        with self._lock:
            self.spool.mkdir(parents=True, exist_ok=True)
            self.journal.mkdir(parents=True, exist_ok=True)
            n = 0
            for p in self.spool.iterdir():
                if p.is_file():
                    p.unlink(missing_ok=True)
                    n += 1
            reason = "the ingest service restarted while this document was being received or parsed: send it again"
            for p in sorted(self.journal.glob("*.json")):
                try:
                    record = json.loads(p.read_text(encoding="utf-8"))
                    rid, name = str(record["request_id"]), str(record["name"])
                except (OSError, ValueError, KeyError, TypeError):
                    rid = ""  # a record cut short by the kill: nobody can be told
                p.unlink(missing_ok=True)
                if rid:
                    self.interrupted.append(Failed(request_id=rid, name=name, reason=reason))
                    self._end(rid)
            return n

    def handed_on(self, request_id: str) -> None:
        """Forget a transfer's record: its document was handed on or reported failed."""
        with self._lock:
            self._record_path(request_id).unlink(missing_ok=True)

    def unfinished(self, request_id: str) -> bool:
        """True while a transfer's record is kept: it was neither handed on nor reported failed."""
        return self._record_path(request_id).exists()

    def _record_path(self, request_id: str) -> Path:
        return self.journal / f"{hashlib.sha256(request_id.encode()).hexdigest()[:32]}.json"

    @property
    def active(self) -> int:
        """How many transfers are waiting for more pieces."""
        return len(self._open)

    def accept(self, part: IngestPart) -> Assembled | Failed | None:
        """Take one piece: None while more are expected (or for a duplicate), else how the transfer ended."""
        with self._lock:
            rid = part.request_id
            if rid in self._finished:
                return None  # a late duplicate of a transfer that already ended
            t = self._open.get(rid)
            try:
                if t is None:
                    t = self._start(part)
                if t.state.accept(part):
                    t.file.write(part.data)
                t.last_at = self._clock()
                if not t.state.done:
                    return None
                t.state.finish()
                t.file.close()
            except DocumentError as exc:
                return self._fail(rid, part.name, exc.reason)
            except OSError as exc:
                return self._fail(rid, part.name, f"could not write the spool file in {self.spool}: {exc.strerror or exc}")
            self._end(rid)
            s = t.state
            return Assembled(
                request_id=rid,
                name=s.name,
                sha256=s.sha256,
                size=s.size,
                line=s.line,
                path=t.path,
                pieces=s.total,
                duplicates=s.duplicates,
            )

    def expire(self) -> list[Failed]:
        """Fail every transfer that got no piece for ``stall_s`` seconds."""
        with self._lock:
            now = self._clock()
            out = []
            for rid, t in list(self._open.items()):
                if now - t.last_at > self.stall_s:
                    reason = (
                        f"no piece for {self.stall_s:g} s after {t.state.next_seq} of {t.state.total} pieces "
                        "(the sender stopped or lost its connection): send the file again"
                    )
                    out.append(self._fail(rid, t.state.name, reason))
            return out

    def touch(self) -> None:
        """Restart every stall timer (after a reconnect, pieces queued by the broker are still coming)."""
        with self._lock:
            now = self._clock()
            for t in self._open.values():
                t.last_at = now

    def close(self) -> None:
        """Abandon every open transfer and remove its spool file (service shutdown); their records
        stay, so the next start reports them failed."""
        with self._lock:
            for rid in list(self._open):
                self._drop(rid, keep_record=True)

    def _start(self, part: IngestPart) -> _Open:
        state = Reassembly(part, self.max_bytes)  # raises DocumentError when refused at the first piece
        if len(self._open) >= self.max_active:
            raise DocumentError(
                state.name, f"{len(self._open)} documents are already arriving (the limit is {self.max_active}): send it again later"
            )
        free = shutil.disk_usage(self.spool).free
        if free < state.size:
            raise DocumentError(state.name, f"not enough disk space: {free / 2**20:.1f} MiB free in {self.spool}")
        # The file name comes from a hash: a request id is sender-chosen text, never a path.
        path = self.spool / f"{hashlib.sha256(part.request_id.encode()).hexdigest()[:32]}.part"
        self._record_path(part.request_id).write_text(json.dumps({"request_id": part.request_id, "name": state.name}), encoding="utf-8")
        t = _Open(state=state, path=path, file=path.open("wb"), last_at=self._clock())
        self._open[part.request_id] = t
        return t

    def _fail(self, rid: str, name: str, reason: str) -> Failed:
        t = self._open.get(rid)
        self._drop(rid)
        return Failed(request_id=rid, name=t.state.name if t else name, reason=reason)

    def _drop(self, rid: str, *, keep_record: bool = False) -> None:
        t = self._open.get(rid)
        if t is not None:
            try:
                t.file.close()
            finally:
                t.path.unlink(missing_ok=True)
        if not keep_record:
            self._record_path(rid).unlink(missing_ok=True)
        self._end(rid)

    def _end(self, rid: str) -> None:
        self._open.pop(rid, None)
        self._finished[rid] = None
        while len(self._finished) > REMEMBER_FINISHED:
            self._finished.popitem(last=False)
