"""Hybrid search: vector + BM25 + exact terms, fused; and the check for names no document has."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Sequence
from typing import NamedTuple

import msgspec
import numpy as np

from lineside.text import asked_kind, clauses, identifiers, lexical_terms, row_keys, section_references, singular, site_mentions, terms
from schemas.messages import Passage
from services.retriever.adapters import Index
from services.retriever.handlers import (
    Filters,
    content_words,
    current_preference,
    date_strings,
    exact_counts,
    exact_groups,
    exact_match,
    exact_ranking,
    exact_terms,
    followup_names,
    fts_all_query,
    fts_query,
    fuse,
    is_dated_record,
    line_mentions,
    line_spellings,
    lines_in,
    own_codes,
    per_line_asks,
    record_preference,
    unknown_line_names,
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
    best_score: float | None = None
    unknown_lines: list[str] = []  # noqa: RUF012 - a NamedTuple default, never mutated
    other_sites: list[str] = []  # noqa: RUF012 - a NamedTuple default, never mutated
    home_sites: list[str] = []  # noqa: RUF012 - a NamedTuple default, never mutated


FILTERED_POOL_FACTOR = 4
"""A filtered search looks at four times as many candidates, since many are filtered out."""


def hybrid_search(
    index: Index,
    vector: np.ndarray,
    question: str,
    k: int,
    pool: int,
    *,
    filters: Filters | None = None,
    today: dt.date | None = None,
    names: Sequence[str] = (),
) -> SearchResult:
    """The ``k`` best passages for ``question``, the codes/lines it names that no document contains,
    and whether the best passage contains every code, date and line the question names.

    Candidates come from four rankings of ``pool`` each: FAISS cosine, BM25 over the
    question's words (Chinese as bigrams), BM25 over its exact terms (codes, dates, lines),
    and a substring search for its dates (relative ones resolved against ``today``). They
    are ordered first by how many exact terms they contain, then by weighted reciprocal rank
    fusion. Only passages ``filters`` allow are returned. Scores are cosine similarities.

    ``names``: codes and part numbers found for the question elsewhere (``followup_names``); a
    passage that has them counts them as exact terms, and a fifth ranking finds those that do.
    """
    scope = filters or Filters()
    if scope:
        pool *= FILTERED_POOL_FACTOR
    with index.consistent():
        vec_ids = index.vector_ranking(vector, pool)
        lex_ids = index.lexical_ranking(fts_query(index.informative(lexical_terms(question), MAX_TERM_SHARE, MAX_TERM_DF)), pool)
        # Passages with every exact thing the question names (the code AND the machine AND the
        # date): FTS5 intersects the lists, so a common group costs little. When no passage has
        # them all, passages with any of the informative ones.
        aliases = index.asset_aliases()
        groups = exact_groups(question, today, aliases)
        dates = date_strings(question, today)
        if len(groups) <= 1:
            exact_ids = []
        elif dates:  # dates are substrings, not words: the trigram index finds them ~3x faster
            exact_ids = index.substring_all_ranking(groups, pool)
        else:
            exact_ids = index.lexical_ranking(fts_all_query(groups), pool)
        if not exact_ids:
            exact_ids = index.lexical_ranking(
                fts_query(index.informative(exact_terms(question, today, aliases), MAX_TERM_SHARE, MAX_TERM_DF)), pool
            )
        date_ids = index.substring_ranking(dates, pool)
        # A name in thousands of chunks (a machine model) would cost FTS5 most of the index and tells
        # little: the same rule as the question's own BM25 words.
        present = [n for n in names if index.contains(n)]
        named = index.informative(present, MAX_TERM_SHARE, MAX_TERM_DF) if present else []
        name_ids = index.lexical_ranking(fts_query(named), pool) if named else []
        candidates = index.passages(list(dict.fromkeys([*exact_ids, *date_ids, *name_ids, *vec_ids, *lex_ids])), vector)
        known_lines = index.line_names()
        unknown = [t for t in identifiers(question) if not index.contains(t)]
        no_line = [f"Line {n}" for n in line_mentions(question) if not any(index.contains(sp) for sp in line_spellings(n))]
        no_line += [n for n in unknown_line_names(question, known_lines) if n not in no_line]
        unknown += [n for n in no_line if n not in unknown]
        words = content_words(question)
        absent = index.absent(words)
        asked_sites = site_mentions(question)
        home = index.home_sites() if asked_sites else []
    fused = fuse([vec_ids, lex_ids, exact_ranking(question, candidates, today, known_lines, aliases)])
    exact = exact_counts(question, candidates, today, known_lines, aliases)
    # Followed names count as exact terms in a row one of them keys (its fault-table row, its
    # storeroom row), where the row also has a word of the ask ("spare" for "where are its spares
    # kept"); a passage that mentions them in passing is ranked by the ask's own words and meaning.
    asked_words = {singular(t) for t in terms(question)} if present else set()
    # The passages that state the kind of answer the question word wants ("how often": an interval).
    wanted = asked_kind(question)
    states = {p.chunk_id for p in candidates if wanted.stated.search(f"{p.title}\n{p.text}")} if wanted else set()
    for p in candidates if present else ():  # only an ask that follows names: every search runs this
        keys = row_keys(p.text)
        blob = f"{p.title}\n{p.text}"
        if any(n.casefold() in keys for n in present) and asked_words & {singular(t) for t in terms(blob)}:
            # ...with every followed name it has: the fault row of the code on the logged machine
            # ("Code: F-311; Machine: TR-55") before the same code's row on another machine; and a
            # row that states the kind of answer the ask's question word wants (a bin for "where is
            # its spare kept") before one that does not (the manual's spare-parts list).
            has = sum(n.casefold() in blob.casefold() for n in present)
            exact[p.chunk_id] = exact.get(p.chunk_id, 0) + has + (p.chunk_id in states)
    # Among passages that name the same exact things, the kind of document the question wants
    # (a log row for "why did it stop on ...", a reference for "what does it mean") goes first.
    # Only where the question names something exact: elsewhere the fused ranking decides alone.
    prefer = record_preference(question, candidates, today) if exact else {}
    # A register's superseded revision only after the one in force (with the same exact names).
    current = current_preference(question, candidates)
    # A table row keyed by a code the question names ("Code: F-311; …", "Product: VX-90; …") is
    # about it; a notice or a page that mentions the code comes after it. Lines and asset tags
    # say where, not what: a row keyed by the line is not about the question's subject.
    asked = {n.casefold() for n in own_codes(question, {n.casefold() for n in [*known_lines, *aliases]})}
    keyed = {p.chunk_id for p in candidates if asked & row_keys(p.text)} if asked else set()
    # ...then a passage that states the kind of answer the question word wants ("how often": an
    # interval; "功率": a power in kW) before one about the same things that states none. Only
    # among passages that name what the question names: elsewhere the fused ranking decides alone.
    stating = {c for c in states if c in exact}
    candidates.sort(
        key=lambda p: (
            exact.get(p.chunk_id, 0),
            current.get(p.chunk_id, 1),
            p.chunk_id in keyed,
            p.chunk_id in stating,
            prefer.get(p.chunk_id, 0) if p.chunk_id in exact else 0,
            fused.get(p.chunk_id, 0.0),
        ),
        reverse=True,
    )
    hits = [p for p in candidates if scope.allows(p)][:k]
    best = max((p.score for p in hits), default=None)
    # A site the documents are not about, which the best passage does not name either: the sister
    # plant's settings are not in this plant's documents, however alike its question looks.
    best_text = f"{hits[0].doc}\n{hits[0].title}\n{hits[0].text}" if hits else ""
    other = [s for s in asked_sites if s not in home and s not in site_mentions(best_text)]
    return SearchResult(
        hits,
        unknown,
        bool(hits) and exact_match(question, hits[0], known_lines, aliases),
        len(words),
        absent,
        best,
        no_line,
        other,
        home if other else [],
    )


FOLLOWUP_FROM = 3
"""An ask that refers to "the fault code" or "the spare part" without naming it looks for the codes
and part numbers of the best of the question's first three passages that names any."""


LINE_CHOICES = 8
"""Passages an ask about one line weighs: those of the other lines' documents are passed over."""
FOLLOW_CHOICES = 16
"""Passages a look-up of a record's codes weighs: the record's own document fills the first places."""

MAX_NAMES = 5
"""Codes an ask follows at most (a fault-table page may name dozens: each costs a look-up)."""
MAX_ASKS = 3
"""Asks of one question searched on their own (each costs an embedding and a search)."""
ASK_CHOICES = 2
"""Passages an ask may claim: its best, or its second when another ask claimed the best."""


def search(
    index: Index,
    embed: Callable[[str], np.ndarray],
    question: str,
    k: int,
    pool: int,
    *,
    filters: Filters | None = None,
    today: dt.date | None = None,
) -> SearchResult:
    """``hybrid_search`` for the whole question, then one for each ask of a multi-part question
    (``with_asks``), then the section of its document that one of the first passages refers to
    (``referred_sections``)."""
    vector = embed(question)
    found = with_asks(index, embed, vector, question, k, pool, filters, today)
    found = stated_elsewhere(index, found, vector, k, filters)
    return referred_sections(index, found, question, vector, k, filters)


DOCUMENT_CHOICES = 200
"""Chunks of a passage's own document weighed for the section that states what an ask wants."""


def stated_elsewhere(index: Index, found: SearchResult, vector: np.ndarray, k: int, filters: Filters | None) -> SearchResult:
    """``found`` with, right after an ask's passage that states no value of the kind the ask wants
    (``asked_kind``: "多久标定一次" an interval), the passage that does, found by the codes and part
    numbers of the ask's line in it.

    Serves the registers that name a part without saying how it is used: the storeroom row of a
    calibration gas answers "which gas" but not "how often"; the manual's calibration section,
    which names the same gas, says how many operating hours apart. The look-up is a BM25 search of those names;
    of the passages it finds that state the kind, the one naming most of them comes first, then
    the nearest to the question. One such passage at most; the last passage makes room.
    """
    if k < 2:
        return found
    have = {p.chunk_id for p in found.passages}
    scope = filters or Filters()
    for i, p in enumerate(found.passages):
        kind = asked_kind(p.ask) if p.ask else None
        if kind is None or kind.stated.search(f"{p.title}\n{p.text}"):
            continue
        asked = terms(p.ask)
        line = max(p.text.splitlines(), key=lambda ln: len(asked & terms(ln)), default="")
        names = identifiers(line)[:MAX_NAMES]
        with index.consistent():
            # By the names of the ask's line, else within the passage's own document (the work
            # instruction's frequency section, for an ask its purpose section was found for); the
            # chunks' text is filtered before their vectors are read.
            # A name in thousands of chunks (a machine model) tells little and costs FTS5 most of
            # the index: the same rule as the question's own BM25 words.
            names = index.informative(names, MAX_TERM_SHARE, MAX_TERM_DF) if names else []
            if names:
                ids = index.lexical_ranking(fts_query(names), FOLLOW_CHOICES)
            else:
                ids = [c for c, text in index.document_chunks(p.doc, DOCUMENT_CHOICES) if kind.stated.search(text)][:FOLLOW_CHOICES]
            fresh = [c for c in ids if c not in have]
            others = [o for o in index.passages(fresh, vector) if scope.allows(o) and kind.stated.search(f"{o.title}\n{o.text}")]
        if others:
            best = max(others, key=lambda o: (sum(n.casefold() in o.text.casefold() for n in names), o.score))
            passages = [*found.passages[: i + 1], msgspec.structs.replace(best, ask=p.ask), *found.passages[i + 1 :]][:k]
            return found._replace(passages=passages)
    return found


REFER_FROM = 3
"""Passages whose references to a section of their document are followed: the best three."""


def referred_sections(
    index: Index, found: SearchResult, question: str, vector: np.ndarray, k: int, filters: Filters | None
) -> SearchResult:
    """``found`` with the section one of its first passages refers to ("… replace the filter as in
    chapter 5", "按第 5 章更换滤芯", "see section 4.2") right after that passage, when it is not among
    the passages already: the section that says how is where the passage sends the technician.
    Serves specifications and manuals, whose alarm and inspection sections point to the chapter
    with the procedure. One reference at most; the last passage makes room."""
    if k < 2:
        return found
    have = {p.chunk_id for p in found.passages}
    scope = filters or Filters()
    for i, p in enumerate(found.passages[:REFER_FROM]):
        for number in section_references(p.text):
            with index.consistent():
                ids = [c for c in index.section_chunks(p.doc, number) if c not in have][:1]
                target = index.passages(ids, vector) if ids else []
            if target and scope.allows(target[0]):
                # It carries the question as its ask: its line that answers the question is quoted.
                section = msgspec.structs.replace(target[0], ask=p.ask or question)
                passages = [*found.passages[: i + 1], section, *found.passages[i + 1 :]][:k]
                return found._replace(passages=passages)
    return found


def with_asks(
    index: Index,
    embed: Callable[[str], np.ndarray],
    vector: np.ndarray,
    question: str,
    k: int,
    pool: int,
    filters: Filters | None,
    today: dt.date | None,
) -> SearchResult:
    """``hybrid_search`` for the whole question, then, for a question that asks several things
    ("What does the code mean, and where is the spare part kept?"), the best passage of each ask
    goes in right after the question's best passage, so every ask has its source in the ``k``.

    An ask that refers to a code or part it does not name searches for the codes and part numbers
    the question's best passages name: "Line 3 stopped on 2026-05-14; what does the fault code
    logged mean, and what does the fault table say to do?" finds the log row, then the fault
    table's row of the code in it, as a technician would look it up. A passage an ask claimed
    carries that ask (``Passage.ask``). Passages are scored against the whole question; unknown
    terms, exact match and absent words are the whole question's. ``vector`` is the question's.
    """
    main = hybrid_search(index, vector, question, k, pool, filters=filters, today=today)
    asks = clauses(question)[:MAX_ASKS]
    with index.consistent():
        skip = {n.casefold() for n in [*index.asset_aliases(), *index.line_names()]}
        per_line = len(asks) < 2
        if per_line:
            asks = per_line_asks(question, index.line_names())[:MAX_ASKS]
    if k < 2 or not main.passages:
        return main
    names = followup_names(question, main.passages[:FOLLOWUP_FROM], skip)[:MAX_NAMES]
    if len(asks) < 2:
        return follow_names(index, vector, question, main, names, skip, k, filters=filters)
    # An ask that names no code of its own ("what does it mean", "where is the spare kept") is
    # about what the question's best passages name: it follows those names to the passages that
    # define them (a log row's code to its fault-table row, a part number to its bin).
    # An ask that follows names is that ask about them ("where is the spare part kept (HX-2201-C)"):
    # the LLM service picks the lines of its passage by it.
    followed = [bool(names) and not identifiers(ask) for ask in asks]
    found = [
        hybrid_search(
            index,
            embed(ask),
            ask,
            LINE_CHOICES if per_line else ASK_CHOICES,
            pool,
            filters=filters,
            today=today,
            names=names if follow else (),
        )
        for ask, follow in zip(asks, followed, strict=True)
    ]
    asks = [f"{ask} ({', '.join(names)})" if follow else ask for ask, follow in zip(asks, followed, strict=True)]
    # Each ask claims a passage of its own: its best, or its second when another ask claimed the
    # best. Asks whose best passage has every code and date they name claim first: "what interval
    # applies on Line 4 from 2026-06-09" owns the notice of those dates, so "how often is the glue
    # temperature normally logged" takes its second, the work instruction's frequency section.
    # An ask about one of several lines the question compares does not claim a passage whose
    # heading path is another of those lines' (the WL-2 SOP's table row for a product also names
    # WL-1 in a note): each line's value is in its own document.
    with index.consistent():
        known = index.line_names()
    compared = lines_in(question, known) if per_line else set()
    chosen = [main.passages[0].chunk_id]
    claimed: dict[int, str] = {}
    for ask, result in sorted(zip(asks, found, strict=True), key=lambda r: not r[1].exact_match):
        own = lines_in(ask, known) & compared
        for p in result.passages:
            heading = lines_in(p.title, known) & compared
            if own and heading and not heading & own:
                continue
            if p.chunk_id not in claimed:
                claimed[p.chunk_id] = ask
                if p.chunk_id not in chosen:
                    chosen.append(p.chunk_id)
                break
    chosen += [p.chunk_id for p in main.passages if p.chunk_id not in chosen]
    with index.consistent():
        passages = index.passages(chosen[:k], vector)
    # The question's best passage serves the whole question, also when an ask found it first.
    passages = [
        msgspec.structs.replace(p, ask=claimed[p.chunk_id]) if p.chunk_id in claimed and p.chunk_id != chosen[0] else p for p in passages
    ]
    return main._replace(passages=passages)


def follow_names(
    index: Index,
    vector: np.ndarray,
    question: str,
    main: SearchResult,
    names: Sequence[str],
    skip: Collection[str],
    k: int,
    *,
    filters: Filters | None = None,
) -> SearchResult:
    """``main`` with, second, the passage of another document that defines the codes its best
    passage names, when that passage is a record (a dated log row) and the question names no code
    of its own.

    "Why did WL-2 stop on the 14th?" or "what did the alarm logged for that stop mean?" is about
    the code the log row holds, which the question cannot name: a technician reads the row, then
    looks the code up in the fault table. The look-up is a BM25 search for the row's codes alone
    (a few milliseconds, not a second search of the question); of the passages of other documents
    it finds, a table row keyed by one of the codes comes first, a row of its own before one among
    others on a page, then the one naming most of the codes.
    """
    if not names or own_codes(question, skip) or not is_dated_record(main.passages[0]):
        return main
    scope = filters or Filters()
    first = main.passages[0]
    have = {p.chunk_id for p in main.passages}
    with index.consistent():
        named = index.informative([n for n in names if index.contains(n)], MAX_TERM_SHARE, MAX_TERM_DF)
        ids = index.lexical_ranking(fts_query(named), FOLLOW_CHOICES) if named else []
        others = [p for p in index.passages([i for i in ids if i not in have], vector) if p.doc != first.doc and scope.allows(p)]
    if not others:
        return main
    wanted = {n.casefold() for n in names}

    def defines(p: Passage) -> tuple[bool, bool, int, int]:
        blob = p.text.casefold()
        return (
            bool(wanted & row_keys(p.text.strip().split("\n", 1)[0])),
            bool(wanted & row_keys(p.text)),
            sum(n in blob for n in wanted),
            -others.index(p),
        )

    extra = max(others, key=defines)
    ask = f"{question} ({', '.join(names)})"
    return main._replace(passages=[first, msgspec.structs.replace(extra, ask=ask), *main.passages[1 : k - 1]])
