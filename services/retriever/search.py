"""Hybrid search: vector + BM25 + exact terms, fused; and the check for names no document has."""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

import numpy as np

from schemas.messages import Passage
from services.retriever.adapters import Index
from services.retriever.handlers import (
    Filters,
    content_words,
    date_strings,
    exact_counts,
    exact_groups,
    exact_match,
    exact_ranking,
    exact_terms,
    fts_all_query,
    fts_query,
    fuse,
    fusion_weights,
    identifiers,
    lexical_terms,
    line_mentions,
    line_spellings,
    record_preference,
)

MAX_TERM_SHARE = 0.5
"""Question words found in more than a fifth of all chunks are left out of the BM25 query."""
MAX_TERM_DF = 2000
"""...and so are words found in more than 2000 chunks: at 100k chunks a word in 16k of them
("Conveyor") costs FTS5 ~12 ms to score, one in 2000 about 1.5 ms."""


class SearchResult(NamedTuple):
    """Passages best first, names no document contains, and whether the best passage has every exact name."""

    passages: list[Passage]
    unknown_terms: list[str]
    exact_match: bool
    content_words: int = 0
    absent_words: list[str] = []  # noqa: RUF012 - a NamedTuple default, never mutated


FILTERED_POOL_FACTOR = 4
"""A filtered search looks at four times as many candidates, since many are filtered out."""


def hybrid_search(
    index: Index,
    vector: np.ndarray,
    question: str,
    k: int,
    pool: int,
    line: str | None = None,
    *,
    filters: Filters | None = None,
    today: dt.date | None = None,
) -> SearchResult:
    """The ``k`` best passages for ``question``, the codes/lines it names that no document contains,
    and whether the best passage contains every code, date and line the question names.

    Candidates come from four rankings of ``pool`` each: FAISS cosine, BM25 over the
    question's words (Chinese as bigrams), BM25 over its exact terms (codes, dates, lines),
    and a substring search for its dates (relative ones resolved against ``today``). They
    are ordered first by how many exact terms they contain, then by weighted reciprocal rank
    fusion. Only passages ``filters`` allow are returned. Scores are cosine similarities.
    """
    scope = filters or Filters(line=line)
    if scope:
        pool *= FILTERED_POOL_FACTOR
    with index.consistent():
        vec_ids = index.vector_ranking(vector, pool)
        lex_ids = index.lexical_ranking(fts_query(index.informative(lexical_terms(question), MAX_TERM_SHARE, MAX_TERM_DF)), pool)
        # Passages with every exact thing the question names (the code AND the machine AND the
        # date): FTS5 intersects the lists, so a common group costs little. When no passage has
        # them all, passages with any of the informative ones.
        groups = exact_groups(question, today)
        exact_ids = index.lexical_ranking(fts_all_query(groups), pool) if len(groups) > 1 else []
        if not exact_ids:
            exact_ids = index.lexical_ranking(fts_query(index.informative(exact_terms(question, today), MAX_TERM_SHARE, MAX_TERM_DF)), pool)
        date_ids = index.substring_ranking(date_strings(question, today), pool)
        candidates = index.passages(list(dict.fromkeys([*exact_ids, *date_ids, *vec_ids, *lex_ids])), vector)
        unknown = [t for t in identifiers(question) if not index.contains(t)]
        unknown += [f"Line {n}" for n in line_mentions(question) if not any(index.contains(sp) for sp in line_spellings(n))]
        words = content_words(question)
        absent = index.absent(words)
    fused = fuse([vec_ids, lex_ids, exact_ranking(question, candidates, today)], fusion_weights(question))
    exact = exact_counts(question, candidates, today)
    # Among passages that name the same exact things, the kind of document the question wants
    # (a log row for "why did it stop on ...", a reference for "what does it mean") goes first.
    # Only where the question names something exact: elsewhere the fused ranking decides alone.
    prefer = record_preference(question, candidates, today) if exact else {}
    candidates.sort(
        key=lambda p: (exact.get(p.chunk_id, 0), prefer.get(p.chunk_id, 0) if p.chunk_id in exact else 0, fused.get(p.chunk_id, 0.0)),
        reverse=True,
    )
    hits = [p for p in candidates if scope.allows(p)][:k]
    return SearchResult(hits, unknown, bool(hits) and exact_match(question, hits[0]), len(words), absent)
