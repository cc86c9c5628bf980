"""Ingest decisions, free of I/O: validate a document, parse it, chunk it, and check the
pieces of a document that arrives piecewise."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import PurePosixPath, PureWindowsPath

from lineside.errors import DocumentError
from schemas.messages import IndexChunks, IngestDocument, IngestPart
from services.ingest.chunking import chunk_sections
from services.ingest.parsers import PARSERS


def check_name(name: str) -> str:
    """A document name is a bare file name: no directories, no ``..``, no control characters."""
    if not name or name in (".", ".."):
        raise DocumentError(name or "(no name)", "the document has no file name")
    if "/" in name or "\\" in name or ".." in name or PurePosixPath(name).name != name or PureWindowsPath(name).name != name:
        raise DocumentError(name, "the file name contains a path separator or '..': send a bare file name")
    if any(ord(c) < 32 for c in name) or len(name) > 200:
        raise DocumentError(name, "the file name contains control characters or is longer than 200 characters")
    return name


def doc_id_of(name: str) -> str:
    """Stable id of a document: derived from its name, so a new version replaces the old one."""
    return hashlib.sha256(name.encode()).hexdigest()[:16]


def check_type(name: str) -> str:
    """The parser key (suffix) of ``name``; raise DocumentError when no parser reads it."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in PARSERS:
        raise DocumentError(name, f"unsupported file type {suffix or '(none)'}; supported: {', '.join(sorted(PARSERS))}")
    return suffix


def check_size(name: str, size: int, max_bytes: int) -> None:
    """Raise DocumentError when a document of ``size`` bytes is over the limit or empty."""
    if size > max_bytes:
        raise DocumentError(name, f"the document is {size / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.1f} MiB")
    if size <= 0:
        raise DocumentError(name, "the file is empty (0 bytes)")


PARSING = 6
"""Raised whenever parsing or chunking changes what a file becomes (2: wrapped lines joined; 3: not
inside Markdown code blocks; 5: chunks end at sentence ends, never with a heading, and wrapped PDF
table cells stay in their row; 6: a line ending in a bracket or unit carries on into a next line
in lower case; a sub-section that starts late in a chunk goes to the next, which has its heading in
its title; a numbered step list is not cut before twice a chunk's size), so
that ingesting an unchanged file after an upgrade re-indexes it instead of keeping old chunks."""


def version_of(content: bytes) -> str:
    """A document version: the file's sha256 and the parsing it went through."""
    return f"{hashlib.sha256(content).hexdigest()}/parse-{PARSING}"


def process(doc: IngestDocument, max_bytes: int) -> IndexChunks:
    """Validate, parse and chunk ``doc``; raise DocumentError saying what is wrong with it."""
    name = check_name(doc.name)
    suffix = check_type(name)
    check_size(name, len(doc.content), max_bytes)
    digest = hashlib.sha256(doc.content).hexdigest()
    if digest != doc.sha256:
        raise DocumentError(name, "checksum mismatch: the file was damaged in transfer; send it again")
    chunks = chunk_sections(PARSERS[suffix](name, doc.content))
    if not chunks:
        raise DocumentError(name, "no text found in the document")
    if doc.line:
        chunks = [c if c.line else type(c)(locator=c.locator, text=c.text, title=c.title, line=doc.line) for c in chunks]
    return IndexChunks(
        request_id=doc.request_id, doc=name, doc_id=doc_id_of(name), version=version_of(doc.content), chunks=chunks, ingested_at=time.time()
    )


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
MAX_REQUEST_ID = 128
"""Request ids are uuids in practice; a longer one is a broken or hostile sender."""


class Reassembly:
    """One piecewise transfer: checks each piece against the first and tracks size and checksum.

    Pieces must come in order. A piece seen before (QoS 1 redelivers after a reconnect) is a
    duplicate and is ignored; a gap means a piece was lost, and the transfer fails. The caller
    does the I/O: it appends the data of every piece ``accept`` says to keep.
    """

    def __init__(self, first: IngestPart, max_bytes: int) -> None:
        """Start a transfer from its first piece; raise DocumentError when it must be refused now."""
        name = check_name(first.name)
        check_type(name)
        if not first.request_id or len(first.request_id) > MAX_REQUEST_ID:
            raise DocumentError(name, f"the request id is empty or longer than {MAX_REQUEST_ID} characters")
        check_size(name, first.size, max_bytes)
        if not _SHA256_HEX.fullmatch(first.sha256):
            raise DocumentError(name, "the sha256 of the file is not 64 lower-case hex digits")
        if not 1 <= first.total <= first.size:
            raise DocumentError(name, f"{first.total} pieces cannot hold {first.size} bytes: the sender is broken")
        if first.seq != 0:
            raise DocumentError(
                name,
                f"piece {first.seq} of {first.total} arrived but piece 0 never did (lost, or the ingest service "
                "restarted during the transfer): send the file again",
            )
        self.request_id = first.request_id
        self.name = name
        self.size = first.size
        self.total = first.total
        self.sha256 = first.sha256
        self.line = first.line
        self.next_seq = 0
        """The piece expected next; every piece before it has been kept."""
        self.received = 0
        """Bytes kept so far."""
        self.duplicates = 0
        self._hash = hashlib.sha256()

    @property
    def done(self) -> bool:
        """True once every piece has been kept (``finish`` then checks size and checksum)."""
        return self.next_seq == self.total

    def accept(self, part: IngestPart) -> bool:
        """True when ``part``'s data must be appended, False for a duplicate; DocumentError when the
        piece shows the transfer is broken (a gap, a different file, more data than announced)."""
        if (part.name, part.size, part.total, part.sha256, part.line) != (self.name, self.size, self.total, self.sha256, self.line):
            raise DocumentError(self.name, f"piece {part.seq} describes a different file than piece 0 (name, size or checksum differ)")
        if not 0 <= part.seq < self.total:
            raise DocumentError(self.name, f"piece {part.seq} is outside 0..{self.total - 1}: the sender is broken")
        if part.seq < self.next_seq:
            self.duplicates += 1
            return False
        if part.seq > self.next_seq:
            raise DocumentError(
                self.name, f"piece {self.next_seq} of {self.total} is missing (piece {part.seq} came next): send the file again"
            )
        if self.received + len(part.data) > self.size:
            raise DocumentError(self.name, f"the pieces hold more than the announced {self.size} bytes: the sender is broken")
        self._hash.update(part.data)
        self.received += len(part.data)
        self.next_seq += 1
        return True

    def finish(self) -> None:
        """Check the whole file once every piece is in; raise DocumentError when it does not match."""
        if self.received != self.size:
            raise DocumentError(self.name, f"the pieces hold {self.received} bytes but the announced size is {self.size}")
        if self._hash.hexdigest() != self.sha256:
            raise DocumentError(self.name, "checksum mismatch over the reassembled file: a piece was damaged in transfer; send it again")
