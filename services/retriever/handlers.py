"""Retriever decisions, free of I/O."""

from __future__ import annotations

from collections.abc import Sequence

from schemas.messages import Chunk, Passage

EMBED_TITLE_CHARS = 200
"""The heading path is prepended to the embedded text (it carries the machine and section),
but capped so a long path cannot crowd out the chunk's own words."""


def embedding_text(chunk: Chunk) -> str:
    """Text that is embedded for a chunk: its title path, then its text."""
    title = chunk.title[:EMBED_TITLE_CHARS]
    return f"{title}\n{chunk.text}" if title else chunk.text


def line_allows(chunk_line: str | None, wanted: str | None) -> bool:
    """A search scoped to a line sees that line's chunks plus plant-wide ones (no line)."""
    if wanted is None or chunk_line is None:
        return True
    return normalise_line(chunk_line) == normalise_line(wanted)


def normalise_line(value: str) -> str:
    """'Line 3', 'line3', 'L3' and '3' all name line 3."""
    v = value.strip().lower().replace(" ", "")
    for prefix in ("line", "l"):
        if v.startswith(prefix) and v[len(prefix) :].isdigit():
            return v[len(prefix) :]
    return v


def best_first(passages: Sequence[Passage], top_k: int) -> list[Passage]:
    """Highest score first, one passage per chunk, at most ``top_k``."""
    seen: set[int] = set()
    out: list[Passage] = []
    for p in sorted(passages, key=lambda p: p.score, reverse=True):
        if p.chunk_id in seen:
            continue
        seen.add(p.chunk_id)
        out.append(p)
        if len(out) == top_k:
            break
    return out
