"""Structure first, then size: sections become chunks of a bounded token count.

Token counts are estimated without a tokenizer: a Latin word or number is about 1.3
tokens, a CJK character about 1 (MiniLM and Qwen both split Chinese per character or
finer), so Chinese text is measured by characters, not spaces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from schemas.messages import Chunk

CHUNK_TOKENS = 120
"""Small chunks: a 0.5B model reads one table row or paragraph far better than a page (docs/retrieval.md)."""
OVERLAP_TOKENS = 20
"""A fact that straddles a split stays whole in one of the two chunks."""

_WORD = re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf]|[^\s\u4e00-\u9fff\u3400-\u4dbf]+")


@dataclass(frozen=True)
class Section:
    """A structural unit of a document: a page, a section under a heading, a table row."""

    locator: str
    title: str
    text: str
    line: str | None = None
    atomic: bool = False
    """Rows and other units that must not be split or merged with neighbours."""


def tokens(text: str) -> int:
    """Estimated token count of ``text`` (CJK characters count one each)."""
    n = 0
    for m in _WORD.finditer(text):
        w = m.group(0)
        n += 1 if len(w) == 1 and "\u3400" <= w <= "\u9fff" else max(1, round(len(w) / 5))
    return n


def _split_units(text: str) -> list[str]:
    """Lines (or CJK sentences when a line is too long), the smallest units a chunk is built from."""
    units: list[str] = []
    for line in text.split("\n"):
        if not line.strip():
            if units and units[-1] != "":
                units.append("")
            continue
        if tokens(line) <= CHUNK_TOKENS:
            units.append(line)
            continue
        # A very long line: split at sentence ends (Latin or CJK), then hard-split.
        for sent in re.split(r"(?<=[.!?。！？；;])\s*", line):
            while tokens(sent) > CHUNK_TOKENS:
                cut = _cut_at(sent, CHUNK_TOKENS)
                units.append(sent[:cut])
                sent = sent[cut:]
            if sent.strip():
                units.append(sent)
    return units


def _cut_at(text: str, limit: int) -> int:
    n = 0
    for m in _WORD.finditer(text):
        n += 1 if len(m.group(0)) == 1 else max(1, round(len(m.group(0)) / 5))
        if n > limit:
            return max(1, m.start())
    return len(text)


def chunk_section(sec: Section) -> list[Chunk]:
    """Split one section into chunks of at most CHUNK_TOKENS with OVERLAP_TOKENS of overlap."""
    text = sec.text.strip()
    if not text:
        return []
    if sec.atomic or tokens(text) <= CHUNK_TOKENS:
        return [Chunk(locator=sec.locator, title=sec.title, text=text, line=sec.line)]
    chunks: list[Chunk] = []
    units = _split_units(text)
    cur: list[str] = []
    size = 0
    for u in units:
        t = tokens(u)
        if cur and size + t > CHUNK_TOKENS:
            chunks.append(Chunk(locator=sec.locator, title=sec.title, text="\n".join(cur).strip(), line=sec.line))
            # carry the tail as overlap
            tail: list[str] = []
            tsize = 0
            for prev in reversed(cur):
                pt = tokens(prev)
                if tsize + pt > OVERLAP_TOKENS:
                    break
                tail.insert(0, prev)
                tsize += pt
            cur, size = tail, tsize
        cur.append(u)
        size += t
    if any(c.strip() for c in cur):
        chunks.append(Chunk(locator=sec.locator, title=sec.title, text="\n".join(cur).strip(), line=sec.line))
    return chunks


def chunk_sections(sections: Iterable[Section]) -> list[Chunk]:
    """Chunks of every section, in document order."""
    out: list[Chunk] = []
    for sec in sections:
        out.extend(chunk_section(sec))
    return out
