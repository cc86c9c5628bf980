"""Structure first, then size: sections become chunks of a bounded token count.

Token counts are estimated without a tokenizer: a Latin word or number is about 1.3
tokens, a CJK character about 1 (MiniLM and Qwen both split Chinese per character or
finer), so Chinese text is measured by characters, not spaces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from lineside.text import STEP_ITEM, is_subheading, wraps_on
from schemas.messages import Chunk

CHUNK_TOKENS = 120
"""Small chunks: a 0.5B model reads one table row or paragraph far better than a page (docs/retrieval.md)."""
PROCEDURE_TOKENS = 2 * CHUNK_TOKENS
"""A numbered step list is not cut before this size: a procedure is read, and quoted, whole."""
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


def _cut(cur: list[str], following: str) -> int:
    """Where to end a chunk that is full (how many of its lines ``cur`` it keeps; ``following`` is
    the line that did not fit): at its end, unless that splits a sentence wrapped over two lines;
    then after its last line in its second half that ends its sentence. A heading is never left
    at a chunk's end, and a sub-section that starts in the chunk's second half is not begun in it:
    each goes to the next chunk, with the section it heads.

    Serves PDF text, whose lines wrap mid-sentence (``wraps_on``: a value cut from its sentence
    is lost to both chunks), and manuals whose pages run several numbered sections on.
    """
    size = sum(tokens(u) for u in cur)
    seen = 0
    whole = None
    nexts = [*cur[1:], following]
    for i, u in enumerate(cur):
        seen += tokens(u)
        if seen * 2 >= size and not wraps_on(u, nexts[i]):
            whole = i + 1
    cut = whole or len(cur)
    # A sub-section that starts in the chunk's second half goes whole to the next chunk, its heading
    # with its first lines: a procedure's heading and first step apart from its other steps are
    # found by neither half.
    seen = 0
    for i, u in enumerate(cur[:cut]):
        if i and seen * 2 >= size and is_subheading(u):
            cut = i
            break
        seen += tokens(u)
    while cut > 1 and (not cur[cut - 1].strip() or is_subheading(cur[cut - 1])):
        cut -= 1
    return cut


def _next_step(cur: list[str], line: str) -> bool:
    """Whether ``line`` is the next step of the numbered step list that ``cur`` ends with: steps
    (and lines that carry a step's sentence on) from the first step after ``cur``'s last sub-heading.

    Serves manuals and work instructions whose procedures run longer than a chunk."""
    if not STEP_ITEM.match(line.strip()):
        return False
    lines = [x.strip() for x in cur if x.strip()]
    heads = [i for i, x in enumerate(lines) if is_subheading(x)]
    start = heads[-1] + 1 if heads else 0
    first = next((i for i in range(start, len(lines)) if STEP_ITEM.match(lines[i])), None)
    if first is None:
        return False
    # Only a list whose heading (or first step) is in the chunk's first half: one that starts later
    # goes whole to the next chunk (``_cut``), where it is the chunk's subject.
    begins = heads[-1] if heads else first
    if 2 * sum(tokens(x) for x in lines[:begins]) >= sum(tokens(x) for x in lines):
        return False
    steps = lines[first:]
    return all(STEP_ITEM.match(x) or wraps_on(steps[i - 1], x) for i, x in enumerate(steps) if i)


def chunk_section(sec: Section) -> list[Chunk]:
    """Split one section into chunks of at most CHUNK_TOKENS with OVERLAP_TOKENS of overlap,
    each ending where the document's structure allows (``_cut``)."""
    text = sec.text.strip()
    if not text:
        return []
    if sec.atomic or tokens(text) <= CHUNK_TOKENS:
        return [Chunk(locator=sec.locator, title=sec.title, text=text, line=sec.line)]
    chunks: list[Chunk] = []
    cur: list[str] = []
    size = 0
    for u in _split_units(text):
        t = tokens(u)
        # A numbered step list goes on to its end, up to PROCEDURE_TOKENS: steps 5 to 7 of a blade
        # change, apart from the heading and steps 1 to 4, are found by nothing they say.
        if cur and size + t > (PROCEDURE_TOKENS if _next_step(cur, u) else CHUNK_TOKENS):
            cut = _cut(cur, u)
            done, rest = cur[:cut], cur[cut:]
            chunks.append(_chunk(sec, done))
            # carry the tail as overlap, unless the next chunk starts a sub-section of its own
            tail: list[str] = []
            tsize = 0
            starts = next((x for x in [*rest, u] if x.strip()), "")
            for prev in reversed(done if not is_subheading(starts) else []):
                pt = tokens(prev)
                if tsize + pt > OVERLAP_TOKENS:
                    break
                tail.insert(0, prev)
                tsize += pt
            cur = tail + rest
            size = sum(tokens(x) for x in cur)
        cur.append(u)
        size += t
    if any(c.strip() for c in cur):
        chunks.append(_chunk(sec, cur))
    return chunks


def _chunk(sec: Section, lines: list[str]) -> Chunk:
    """A chunk of ``sec``; one that starts with a numbered sub-heading has it in its title ("6 Glue
    tank > 6.3 Temperature control"): the title is what the chunk is about where search and the
    citation read it, and the section's own heading would name its first sub-section's topic."""
    text = "\n".join(lines).strip()
    first = text.split("\n", 1)[0].strip()
    title = f"{sec.title} > {first}" if is_subheading(first) and first not in sec.title else sec.title
    return Chunk(locator=sec.locator, title=title, text=text, line=sec.line)


def chunk_sections(sections: Iterable[Section]) -> list[Chunk]:
    """Chunks of every section, in document order."""
    out: list[Chunk] = []
    for sec in sections:
        out.extend(chunk_section(sec))
    return out
