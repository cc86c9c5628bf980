"""Ingest validation: every bad document gets a reason, good ones become chunks."""

import hashlib

import pytest

from lineside.errors import DocumentError
from schemas.messages import IngestDocument
from services.ingest.handlers import PARSING, doc_id_of, process


def _doc(name: str, content: bytes, sha: str | None = None, line: str | None = None) -> IngestDocument:
    return IngestDocument(request_id="r", name=name, content=content, sha256=sha or hashlib.sha256(content).hexdigest(), line=line)


def test_markdown_becomes_chunks_with_provenance():
    msg = process(_doc("w.md", b"# Pump P-201\n\n## Torque\n\nFlange bolts: 85 N\xc2\xb7m\n"), 1 << 20)
    assert msg.doc == "w.md"
    assert msg.doc_id == doc_id_of("w.md")
    assert msg.version == hashlib.sha256(b"# Pump P-201\n\n## Torque\n\nFlange bolts: 85 N\xc2\xb7m\n").hexdigest() + f"/parse-{PARSING}"
    assert [c.locator for c in msg.chunks] == ["section Pump P-201", "section Torque"]


def test_document_line_tags_chunks():
    msg = process(_doc("w.txt", b"hello line three", line="Line 3"), 1 << 20)
    assert {c.line for c in msg.chunks} == {"Line 3"}


@pytest.mark.parametrize(
    ("name", "content", "sha", "reason"),
    [
        ("../etc/passwd.md", b"x", None, "path separator"),
        ("a/b.md", b"x", None, "path separator"),
        ("a\\b.md", b"x", None, "path separator"),
        ("", b"x", None, "no file name"),
        ("empty.md", b"", None, "empty (0 bytes)"),
        ("prog.exe", b"MZ", None, "unsupported file type .exe"),
        ("w.md", b"text", "0" * 64, "checksum mismatch"),
        ("big.txt", b"x" * 2048, None, "the limit is"),
    ],
)
def test_bad_documents_are_refused_with_a_reason(name, content, sha, reason):
    with pytest.raises(DocumentError) as err:
        process(_doc(name, content, sha), 1024)
    assert reason in err.value.reason


def test_doc_id_is_stable_per_name():
    assert doc_id_of("a.pdf") == doc_id_of("a.pdf") != doc_id_of("b.pdf")
