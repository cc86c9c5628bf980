"""Ingest decisions, free of I/O: validate a document, parse it, chunk it."""

from __future__ import annotations

import hashlib
import time
from pathlib import PurePosixPath, PureWindowsPath

from lineside.errors import DocumentError
from schemas.messages import IndexChunks, IngestDocument
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


def process(doc: IngestDocument, max_bytes: int) -> IndexChunks:
    """Validate, parse and chunk ``doc``; raise DocumentError saying what is wrong with it."""
    name = check_name(doc.name)
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in PARSERS:
        raise DocumentError(name, f"unsupported file type {suffix or '(none)'}; supported: {', '.join(sorted(PARSERS))}")
    if len(doc.content) > max_bytes:
        raise DocumentError(name, f"the document is {len(doc.content) / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.1f} MiB")
    if not doc.content:
        raise DocumentError(name, "the file is empty (0 bytes)")
    digest = hashlib.sha256(doc.content).hexdigest()
    if digest != doc.sha256:
        raise DocumentError(name, "checksum mismatch: the file was damaged in transfer; send it again")
    chunks = chunk_sections(PARSERS[suffix](name, doc.content))
    if not chunks:
        raise DocumentError(name, "no text found in the document")
    if doc.line:
        chunks = [c if c.line else type(c)(locator=c.locator, text=c.text, title=c.title, line=doc.line) for c in chunks]
    return IndexChunks(request_id=doc.request_id, doc=name, doc_id=doc_id_of(name), version=digest, chunks=chunks, ingested_at=time.time())
