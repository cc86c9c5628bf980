"""Retriever decisions, free of I/O."""

from __future__ import annotations

import re
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


RRF_K = 60
"""The usual reciprocal-rank-fusion constant: ranks beyond ~60 add almost nothing."""

_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "should",
        "the",
        "this",
        "to",
        "was",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "with",
        "will",
        "would",
        "there",
        "their",
        "them",
        "they",
        "been",
        "being",
        "into",
        "than",
        "then",
        "that",
        "these",
        "those",
        "after",
        "before",
        "during",
        "over",
        "under",
        "about",
        "also",
        "any",
        "all",
        "each",
        "other",
        "our",
        "your",
        "you",
        "we",
        "me",
        "my",
        "did",
        "many",
        "much",
        "mean",
        "means",
        "get",
        "got",
        "must",
        "need",
        "tell",
        "show",
        "please",
    ]
)
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]+")
_LATIN_TERM = re.compile(r"[A-Za-z0-9][A-Za-z0-9.,/·°%-]*[A-Za-z0-9%]|[A-Za-z0-9]")
_CODE = re.compile(r"\b(?=[A-Za-z0-9-]*\d)(?=[A-Za-z0-9-]*[A-Za-z])[A-Za-z0-9]+(?:-[A-Za-z0-9]+)+\b|\b[A-Z]{1,3}\d{2,}\b")
_LINE_EN = re.compile(r"\bline\s*(\d{1,2})\b", re.IGNORECASE)
_LINE_ZH = re.compile(r"(\d{1,2})\s*号?\s*线")


def lexical_text(text: str) -> str:
    """Text as the BM25 index stores it: Chinese runs become overlapping character bigrams
    (the CJK analysis Lucene uses), so words match without a dictionary; the rest is kept."""
    return _CJK_RUN.sub(lambda m: " " + " ".join(_bigrams(m.group(0))) + " ", text)


_TOKEN_SPLIT = re.compile(r"[^\w]+|_")


def index_tokens(term: str) -> list[str]:
    """The tokens FTS5's unicode61 tokenizer makes of ``term`` after ``lexical_text``."""
    return [t for t in _TOKEN_SPLIT.split(lexical_text(term).casefold()) if t]


def _bigrams(run: str) -> list[str]:
    return [run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)]


def lexical_terms(question: str) -> list[str]:
    """Query terms for the BM25 index: Latin words and codes (2+ characters, no stopwords) and
    the character bigrams of Chinese runs."""
    terms: list[str] = []
    for m in _LATIN_TERM.finditer(question):
        w = m.group(0).strip(".,")
        if len(w) >= 2 and w.lower() not in _STOPWORDS:
            terms.append(w)
    for run in _CJK_RUN.findall(question):
        terms.extend(_bigrams(run))
    seen: set[str] = set()
    return [t for t in terms if not (t.lower() in seen or seen.add(t.lower()))]  # type: ignore[func-returns-value]


def fts_query(terms: Sequence[str]) -> str:
    """An FTS5 MATCH expression: any of the quoted terms."""
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


def identifiers(question: str) -> list[str]:
    """Specific names a question depends on: codes and part numbers such as E-104, HP-4471-B, Q31."""
    return list(dict.fromkeys(m.group(0) for m in _CODE.finditer(question) if len(m.group(0)) >= 3))


def line_mentions(question: str) -> list[str]:
    """Production line numbers named in a question ('Line 4', '4 线', '4号线')."""
    return list(dict.fromkeys([*_LINE_EN.findall(question), *_LINE_ZH.findall(question)]))


def line_spellings(number: str) -> list[str]:
    """How documents write a line number; each is 3+ characters so the trigram index can find it."""
    return [f"Line {number}", f"{number} 线", f"{number}号线", f"L{number}-"]


def fuse(rankings: Sequence[Sequence[int]], weights: Sequence[float] | None = None) -> dict[int, float]:
    """Weighted reciprocal rank fusion of several best-first lists of chunk ids."""
    scores: dict[int, float] = {}
    for i, ranking in enumerate(rankings):
        w = weights[i] if weights else 1.0
        for rank, cid in enumerate(ranking, 1):
            scores[cid] = scores.get(cid, 0.0) + w / (RRF_K + rank)
    return scores


def fusion_weights(question: str) -> tuple[float, float, float]:
    """Weights of the vector, BM25 and exact-term rankings for this question.

    all-MiniLM-L6-v2 was trained on English only: for a question with Chinese in it, its
    ranking is mostly noise, so the lexical rankings carry the decision (docs/retrieval.md).
    """
    if _CJK_RUN.search(question):
        return (0.25, 1.0, 1.0)
    return (1.0, 1.0, 1.0)


_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_MONTH_NAMES = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december"]
_MONTHS = {**{m: i for i, m in enumerate(_MONTH_NAMES, 1)}, **{m[:3]: i for i, m in enumerate(_MONTH_NAMES, 1)}, "sept": 9}
_MONTH_RE = r"(January|February|March|April|May|June|July|August|September|October|November|December|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)"
_ZH_DATE = re.compile(r"(?<!\d)(\d{1,2})\s*月\s*(\d{1,2})\s*[日号]")
_EN_DATE = re.compile(
    rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH_RE}\b\.?|\b{_MONTH_RE}\b\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?\b",
    re.IGNORECASE,
)


def date_groups(question: str) -> list[list[str]]:
    """Dates a question names without a year ("10月3日", "3 October", "Oct 3rd"), each as the
    spellings a log row or notice may use: ``-10-03`` (inside an ISO date) and ``10月3日``."""
    found: list[tuple[int, int]] = [(int(m), int(d)) for m, d in _ZH_DATE.findall(question)]
    for m in _EN_DATE.finditer(question):
        day, mon = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
        month = _MONTHS.get(mon.lower())
        if month and mon != "may":  # lower-case "may" is the verb, not the month
            found.append((month, int(day)))
    return [[f"-{mo:02d}-{d:02d}", f"{mo}月{d}日"] for mo, d in dict.fromkeys(found) if 1 <= mo <= 12 and 1 <= d <= 31]


def exact_groups(question: str) -> list[list[str]]:
    """Exact things a question names: each code, part number and ISO date, and the production
    line (a group of the spellings documents use for it). A passage matches a group when it
    contains any of its strings."""
    groups = [[t] for t in [*identifiers(question), *_DATE.findall(question)]]
    if not _DATE.search(question):
        groups.extend(date_groups(question))
    groups.extend(line_spellings(n)[:3] for n in line_mentions(question))
    return groups


def exact_terms(question: str) -> list[str]:
    """Every string of every exact group, for the full-text query."""
    return [t for g in exact_groups(question) for t in g]


def exact_match(question: str, passage: Passage) -> bool:
    """True when the question names at least one code or date and ``passage`` contains every
    exact group of it (codes, part numbers, dates, the line)."""
    if not (identifiers(question) or _DATE.search(question) or date_groups(question)):
        return False
    blob = f"{passage.title}\n{passage.text}".casefold()
    return all(any(t.casefold() in blob for t in g) for g in exact_groups(question))


def exact_counts(question: str, passages: Sequence[Passage]) -> dict[int, int]:
    """How many of the question's exact groups each passage contains (chunk id to count)."""
    groups = [[t.casefold() for t in g] for g in exact_groups(question)]
    if not groups:
        return {}
    out = {}
    for p in passages:
        blob = f"{p.title}\n{p.text}".casefold()
        n = sum(any(t in blob for t in g) for g in groups)
        if n:
            out[p.chunk_id] = n
    return out


def exact_ranking(question: str, passages: Sequence[Passage]) -> list[int]:
    """Chunk ids of passages that contain what the question names exactly, most groups first,
    ties broken by semantic similarity.

    Fault codes repeat across machines and values differ per line, so a passage that names
    the code *and* the machine or line must outrank one that only resembles the question.
    """
    counts = exact_counts(question, passages)
    scored = sorted((p for p in passages if p.chunk_id in counts), key=lambda p: (-counts[p.chunk_id], -p.score))
    return [p.chunk_id for p in scored]
