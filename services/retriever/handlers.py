"""Retriever decisions, free of I/O."""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from lineside.text import CODE, LINE_MENTION, identifiers, lexical_terms, lexical_text, mentioned_lines, normalise_line
from schemas.messages import Passage

EMBED_TITLE_CHARS = 200
"""The heading path is prepended to the embedded text (it carries the machine and section),
but capped so a long path cannot crowd out the chunk's own words."""


_PAIR = re.compile(r"([^:;\n]{1,40}):\s([^;\n]*)")
_MEASURE = re.compile(r"[\d\s.,:/%+\-–~<>≤≥°]+(?:[A-Za-z°µ³²/·%]{0,6}\s*)?|[—–-]")
ROW_MIN_PAIRS = 3
"""A line of at least this many ``column: value`` pairs is a table row."""


def row_gist(text: str) -> str:
    """A table row as it is embedded: its column names, with the values that are words or names,
    without the bare numbers, times and dates.

    Serves registers and logs with many numeric columns (a recipe row with a dozen setpoints, a
    log row with its start time and minutes): twenty numbers make the row's vector say little
    about what the row is, so a question about "setpoint 7 of recipe VX90-A" finds the SOP that
    mentions the recipe instead of the register row. Numbers are matched
    exactly by the word and exact-name rankings, which read the full text. Other text unchanged.
    """
    lines = text.splitlines()
    if len(lines) != 1:
        return text
    pairs = _PAIR.findall(lines[0])
    if len(pairs) < ROW_MIN_PAIRS or len("; ".join(f"{k}: {v}" for k, v in pairs)) < 0.8 * len(lines[0].strip()):
        return text
    return "; ".join(name.strip() if _MEASURE.fullmatch(value.strip()) else f"{name.strip()}: {value.strip()}" for name, value in pairs)


EMBEDDING_TEXT = "rows-as-gist"
"""How chunks are turned into the text that is embedded; stored with the vectors (``vector_space``),
so an index embedded another way re-embeds itself at start."""


def vector_space(model: str) -> str:
    """The name stored with an index's vectors: the embedding model and how chunk text is embedded."""
    return f"{model}+{EMBEDDING_TEXT}"


def embedding_text(title: str, text: str) -> str:
    """Text that is embedded for a chunk: its title path, then its text (a table row as its gist)."""
    title = title[:EMBED_TITLE_CHARS]
    text = row_gist(text)
    return f"{title}\n{text}" if title else text


def line_allows(chunk_line: str | None, wanted: str | None) -> bool:
    """A search scoped to a line sees that line's chunks plus plant-wide ones (no line)."""
    if wanted is None or chunk_line is None:
        return True
    return normalise_line(chunk_line) == normalise_line(wanted)


RRF_K = 60
"""The usual reciprocal-rank-fusion constant: ranks beyond ~60 add almost nothing."""

_LINE_EN = re.compile(r"\bline\s*(\d{1,2})\b", re.IGNORECASE)
_LINE_ZH = re.compile(r"(\d{1,2})\s*号?\s*线")


def content_words(question: str) -> list[str]:
    """The question's Latin words of 3+ letters that say what it is about: no stopwords, no codes
    (``identifiers`` checks those), no numbers; for the share of them no document contains."""
    codes = {c.casefold() for c in identifiers(question)}
    return [
        t
        for t in lexical_terms(_LINE_EN.sub(" ", question))  # "Line 2": checked as a line (unknown_terms)
        if len(t) >= 3 and t.isascii() and any(c.isalpha() for c in t) and t.casefold() not in codes and not CODE.fullmatch(t)
    ]


def per_line_asks(question: str, known_lines: Sequence[str]) -> list[str]:
    """A question that compares production lines ("the conveyor speed on WL-1 and WL-2", "2 线和
    3 线的设定各是多少") as one ask per line: the question with the other lines left out. Each
    line's value is in its own document or row, and one search for both finds one of them.
    Empty for a question naming fewer than two lines."""
    lines = named_lines(question, known_lines)
    numbered = line_mentions(question)
    if len(lines) + len(numbered) < 2 or (lines and numbered):
        return []
    if lines:
        pattern = _names_pattern(tuple(lines))
        assert pattern is not None  # lines is not empty
        return [_keep_only(pattern, question, lambda m: m.group(0).casefold(), keep.casefold()) for keep in lines]
    return [_keep_only(_LINE_NUMBER, question, lambda m: m.group(1) or m.group(2), keep) for keep in numbered]


def _keep_only(pattern: re.Pattern[str], text: str, key: Callable[[re.Match[str]], str], keep: str) -> str:
    """``text`` with every match of ``pattern`` whose ``key`` is not ``keep`` left out."""
    return pattern.sub(lambda m: m.group(0) if key(m) == keep else "", text)


_LINE_NUMBER = re.compile(r"\bline\s*(\d{1,2})\b|(\d{1,2})\s*号?\s*线", re.IGNORECASE)


_ASSET_TAG = re.compile(r"L\d{1,2}-[A-Z]+-\d+")
"""An asset tag that carries its line number ("L3-TRL-01"), for plants whose tables do not list
their assets (``Index.asset_aliases`` learns the others)."""


def followup_names(question: str, passages: Sequence[Passage], skip: Collection[str] = ()) -> list[str]:
    """Codes and part numbers that the best of ``passages`` naming any adds to the question: what
    "the fault code" or "the spare part" of the question is. Asset tags and line names (``skip``,
    casefolded: the plant's own, learned at ingest) are left out: they name one machine or one
    line, which reference documents (fault tables, storeroom lists) do not repeat."""
    named = {n.casefold() for n in identifiers(question)}
    for p in passages:
        found = [n for n in identifiers(p.text) if n.casefold() not in named and n.casefold() not in skip and not _ASSET_TAG.fullmatch(n)]
        if found:
            return list(dict.fromkeys(found))
    return []


def own_codes(question: str, skip: Collection[str] = ()) -> list[str]:
    """The codes, models and part numbers ``question`` names, without asset tags and line names
    (``skip``, casefolded) or tags that carry their line: what it asks about, not where."""
    return [n for n in identifiers(question) if n.casefold() not in skip and not _ASSET_TAG.fullmatch(n)]


def fts_query(terms: Sequence[str]) -> str:
    """An FTS5 MATCH expression for the BM25 index: any of the quoted terms, written as the index
    writes its text (``lexical_text``)."""
    return " OR ".join('"' + lexical_text(t).strip().replace('"', '""') + '"' for t in terms)


def fts_all_query(groups: Sequence[Sequence[str]]) -> str:
    """An FTS5 MATCH expression for passages with something of every group: (a OR b) AND (c)."""
    return " AND ".join("(" + fts_query(g) + ")" for g in groups if g)


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


_REL_EN = re.compile(
    r"\b(today|yesterday|day before yesterday|(?:this|last|previous|past) (?:week|month|year))\b"
    rf"|\bon the (\d{{1,2}})(?:st|nd|rd|th)\b(?!\s+(?:of\s+)?{_MONTH_RE})",
    re.IGNORECASE,
)
_REL_ZH = re.compile(r"(今天|昨天|前天|本周|这周|上周|上个?星期|本月|这个月|上个?月|今年|去年)|(?<![\d月])(\d{1,2})\s*[日号](?!\s*线)")


_ZH_MONTH_NUMERALS = {"一": 1, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9, "十": 10, "十一": 11, "十二": 12}
_MONTH_ONLY_ZH = re.compile(
    r"(?<![\d一二三四五六七八九十个])(十[一二]?|[一二三四五六七八九]|1[0-2]|0?[1-9])\s*月(?!\s*\d{1,2}\s*[日号])(?![度底初中])"
)
_MONTH_ONLY_EN = re.compile(rf"(?<!\d )(?<!\d)\b{_MONTH_RE}\b\.?(?!\s*\d{{1,2}}(?:st|nd|rd|th)?\b)")


_VERB_MONTHS = frozenset(["may", "march"])
_MONTH_PREPOSITION = re.compile(r"\b(?:in|during|since|until|of|early|late|mid)\s*$", re.IGNORECASE)


def month_groups(question: str, today: dt.date) -> list[list[str]]:
    """Months a question names without a day ("in August", "八月份", "8月"), each as the
    ``YYYY-MM-`` prefix of the log rows of the most recent such month up to ``today``.

    Serves how technicians date an event they half remember: "the stop in August", "八月份那次停线".
    A month with a day is a date (``date_groups``); "May" and "March" count only after "in",
    "during", "since", "until" or "of" ("May I ask" is not a date).
    """
    months: list[int] = []
    for m in _MONTH_ONLY_ZH.finditer(question):
        word = m.group(1)
        months.append(_ZH_MONTH_NUMERALS[word] if word in _ZH_MONTH_NUMERALS else int(word))
    for m in _MONTH_ONLY_EN.finditer(question):
        name = m.group(1).lower()
        if name in _VERB_MONTHS and not _MONTH_PREPOSITION.search(question[: m.start()]):
            continue
        if name in _MONTHS and not _EN_DATE.search(question[max(0, m.start() - 8) : m.end() + 8]):
            months.append(_MONTHS[name])
    out = []
    for month in dict.fromkeys(months):
        year = today.year if month <= today.month else today.year - 1
        out.append([f"{year:04d}-{month:02d}-"])
    return out


def _iso_days(first: dt.date, last: dt.date) -> list[str]:
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _month_prefix(day: dt.date, back: int = 0) -> str:
    y, m = day.year, day.month - back
    while m < 1:
        y, m = y - 1, m + 12
    return f"{y:04d}-{m:02d}-"


def relative_date_groups(question: str, today: dt.date) -> list[list[str]]:
    """Dates a question names relative to ``today`` ("yesterday", "last month", "on the 3rd",
    "上个月", "3号", "in August", "八月份"), each as the ISO-date strings (or ``YYYY-MM-`` month
    prefixes) a log row of that period contains. "On the 3rd" is the most recent 3rd, this month
    or last; a month named alone is the most recent such month."""
    spans: list[list[str]] = []
    monday = today - dt.timedelta(days=today.weekday())
    phrases: list[tuple[str, str | None]] = [(m.group(1) or "", m.group(2)) for m in _REL_EN.finditer(question)]
    phrases += [(m.group(1) or "", m.group(2)) for m in _REL_ZH.finditer(question)]
    for phrase, day in phrases:
        p = phrase.lower()
        if day:
            d = int(day)
            if not 1 <= d <= 31:
                continue
            year, month = (today.year, today.month) if d <= today.day else _month_prev(today)
            spans.append([f"{year:04d}-{month:02d}-{d:02d}"])
        elif p in ("today", "今天"):
            spans.append([today.isoformat()])
        elif p in ("yesterday", "昨天"):
            spans.append([(today - dt.timedelta(days=1)).isoformat()])
        elif p in ("day before yesterday", "前天"):
            spans.append([(today - dt.timedelta(days=2)).isoformat()])
        elif p in ("this week", "本周", "这周"):
            spans.append(_iso_days(monday, today))
        elif p in ("last week", "previous week", "past week", "上周", "上星期", "上个星期"):
            spans.append(_iso_days(monday - dt.timedelta(days=7), monday - dt.timedelta(days=1)))
        elif p in ("this month", "本月", "这个月"):
            spans.append([_month_prefix(today)])
        elif p in ("last month", "previous month", "past month", "上月", "上个月"):
            spans.append([_month_prefix(today, 1)])
        elif p in ("this year", "今年"):
            spans.append([f"{today.year:04d}-"])
        elif p in ("last year", "previous year", "past year", "去年"):
            spans.append([f"{today.year - 1:04d}-"])
    spans.extend(month_groups(question, today))
    return [list(g) for g in dict.fromkeys(tuple(g) for g in spans)]


def _month_prev(day: dt.date) -> tuple[int, int]:
    return (day.year, day.month - 1) if day.month > 1 else (day.year - 1, 12)


_QUANTITY = re.compile(r"(?<![\w.,-])(\d+(?:[.,]\d+)?)\s?(ml|mL|L|l|mm|cm|kg|g|bar|°C|N·m|Nm|kW|bph)(?![\w·])")


def quantity_spellings(number: str, unit: str) -> list[str]:
    """How documents write a quantity a question selects by ("the 1.0 L format", "38 mm caps")."""
    return [f"{number} {unit}", f"{number}{unit}"]


ASSET_HEADERS = frozenset(
    ["asset", "asset no", "asset no.", "asset tag", "asset id", "tag", "equipment no", "资产号", "资产编号", "设备编号"]
)
"""Column names of a table's asset-tag column (a bilingual header matches by any of its words)."""
MACHINE_HEADERS = frozenset(
    ["machine", "equipment", "model", "machine model", "machine type", "设备", "机台", "设备型号", "型号", "设备名称"]
)
"""Column names of a table's machine (model) column."""
_ROW_PAIR = re.compile(r"(?:^|;\s)([^:;\n]{1,40}):\s([^;\n]+)")

Aliases = Mapping[str, Sequence[str]]
"""Other names of a thing, by its name case-folded: an asset tag's machine model."""


def _column_kind(header: str) -> str | None:
    name = header.strip().casefold()
    words = {name, *name.split()}
    if words & ASSET_HEADERS:
        return "asset"
    if words & MACHINE_HEADERS:
        return "machine"
    return None


def asset_pairs(rows: Iterable[str]) -> Counter[tuple[str, str]]:
    """(asset tag case-folded, machine) pairs of the rows (``column: value; ...`` lines, as tables
    are ingested) that have an asset column and a machine column, with how often each occurs."""
    seen: Counter[tuple[str, str]] = Counter()
    for text in rows:
        for line in text.splitlines():
            asset = machine = ""
            for header, value in _ROW_PAIR.findall(line):
                kind = _column_kind(header)
                if kind == "asset" and not asset:
                    asset = value.strip()
                elif kind == "machine" and not machine:
                    machine = value.strip()
            if asset and machine and asset.casefold() != machine.casefold() and identifiers(asset) == [asset]:
                seen[(asset.casefold(), machine)] += 1
    return seen


def aliases_from_pairs(pairs: Iterable[tuple[str, str, int]]) -> dict[str, list[str]]:
    """Each asset tag's machine: the one its rows give most often, and the codes in that value
    (``HX-9`` of "HX-9 filler"); from (tag, machine, count) triples."""
    by_tag: dict[str, Counter[str]] = {}
    for tag, machine, n in pairs:
        by_tag.setdefault(tag, Counter())[machine] += n
    out = {}
    for tag, machines in by_tag.items():
        machine = machines.most_common(1)[0][0]
        out[tag] = list(dict.fromkeys([machine, *(n for n in identifiers(machine) if n.casefold() != tag)]))
    return out


def asset_aliases(rows: Iterable[str]) -> dict[str, list[str]]:
    """The machine model each asset tag is, learned from the plant's own tables: rows with an asset
    column and a machine column.

    Serves how technicians name a machine: by the tag on it ("THX-02 threw E-5"), while fault
    tables and manuals name the model ("E-5 on the HX-9 filler"). Each tag maps to the machine
    value its rows give most often, and the codes in that value.
    """
    return aliases_from_pairs((tag, machine, n) for (tag, machine), n in asset_pairs(rows).items())


def exact_groups(question: str, today: dt.date | None = None, aliases: Aliases | None = None) -> list[list[str]]:
    """Exact things a question names: each code, part number, quantity with its unit ("1.0 L",
    "38 mm") and date (absolute, or relative to ``today`` when given), and the production line (a
    group of the spellings documents use for it). A passage matches a group when it contains any
    of its strings; an asset tag's group also holds the machine model it is (``aliases``)."""
    known = aliases or {}
    groups = [[t, *known.get(t.casefold(), ())] for t in identifiers(question)] + [[t] for t in _DATE.findall(question)]
    groups.extend(quantity_spellings(n, u) for n, u in dict.fromkeys(_QUANTITY.findall(question)))
    if not _DATE.search(question):
        groups.extend(date_groups(question))
        if today is not None:
            groups.extend(relative_date_groups(question, today))
    groups.extend(line_spellings(n)[:3] for n in line_mentions(question))
    return groups


def date_strings(question: str, today: dt.date | None = None) -> list[str]:
    """The date strings of a question's exact groups (for the substring index: they are not words)."""
    out = [*_DATE.findall(question)]
    if not out:
        out += [t for g in date_groups(question) for t in g]
        if today is not None:
            out += [t for g in relative_date_groups(question, today) for t in g]
    return list(dict.fromkeys(out))


def exact_terms(question: str, today: dt.date | None = None, aliases: Aliases | None = None) -> list[str]:
    """Every string of every exact group, for the full-text query."""
    return [t for g in exact_groups(question, today, aliases) for t in g]


def exact_match(question: str, passage: Passage, known_lines: Sequence[str] = (), aliases: Aliases | None = None) -> bool:
    """True when the question names at least one code or calendar date and ``passage`` contains
    every exact group of it (codes, part numbers, dates, the line). A passage that names no line
    at all (a fault table's row) applies to every line, as in ``exact_counts``.

    Relative dates ("last month") rank log rows but are not evidence here: any log has rows
    from last month, whatever the question is about.
    """
    if not (identifiers(question) or date_strings(question)):
        return False
    blob = f"{passage.title}\n{passage.text}".casefold()
    groups = exact_groups(question, aliases=aliases)
    if not names_a_line(blob, known_lines):
        lines = {n.casefold() for n in named_lines(question, known_lines)}
        numbered = len(line_mentions(question))  # exact_groups puts them last
        groups = [g for g in groups[: len(groups) - numbered] if not (len(g) == 1 and g[0].casefold() in lines)]
    return all(any(t.casefold() in blob for t in g) for g in groups)


def names_a_line(text: str, known: Sequence[str] = ()) -> bool:
    """True when ``text`` names any production line ('Line 2', '3 线', an asset tag 'L3-PMP-02', or
    one of the ``known`` line names the plant's tables use, such as 'WL-1')."""
    if LINE_MENTION.search(text):
        return True
    pattern = _names_pattern(tuple(known))
    return pattern is not None and pattern.search(text) is not None


@functools.lru_cache(maxsize=8)
def _names_pattern(known: tuple[str, ...]) -> re.Pattern[str] | None:
    """One regex for all of a plant's line names (the inventory changes only with the documents):
    a search runs it on every candidate passage."""
    if not known:
        return None
    alternatives = "|".join(re.escape(n) for n in sorted(known, key=len, reverse=True))
    return re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])", re.IGNORECASE)


def names(text: str, name: str) -> bool:
    """True when ``text`` contains ``name`` as a whole name: 'WL-1' is in 'WL-1线' and 'on WL-1,'
    but not in 'WL-10' (case-insensitive)."""
    pattern = _names_pattern((name,))
    return pattern is not None and pattern.search(text) is not None


def named_lines(question: str, known: Sequence[str]) -> list[str]:
    """The plant's own line names (``known``: learned from its tables' line columns) that ``question`` names."""
    pattern = _names_pattern(tuple(known))
    if pattern is None:
        return []
    found = {m.group(0).casefold() for m in pattern.finditer(question)}
    return [n for n in known if n.casefold() in found]


def lines_in(text: str, known: Sequence[str]) -> set[str]:
    """Every production line ``text`` names, as one key each: the plant's own line names
    (``named_lines``), casefolded, and numbered lines ("Line 3", "3 线", "L3-…") as "#3"."""
    return {n.casefold() for n in named_lines(text, known)} | {f"#{n}" for n in mentioned_lines(text)}


def unknown_line_names(question: str, known: Sequence[str]) -> list[str]:
    """Names in ``question`` shaped like the plant's line names but not one of them: with lines
    'WL-1' and 'WL-2' known, 'WL-3' is a line the plant does not have. A family is the name's
    letters before its number; only families of names with a number are compared."""
    families = {m.group(1).casefold() for n in known if (m := _FAMILY.fullmatch(n.strip()))}
    knownset = {n.casefold() for n in known}
    out = []
    for m in _FAMILY_IN_TEXT.finditer(question):
        name = m.group(0)
        if m.group(1).casefold() in families and name.casefold() not in knownset:
            out.append(name)
    return list(dict.fromkeys(out))


_FAMILY = re.compile(r"([A-Za-z]+[- ]?)\d{1,3}")
_FAMILY_IN_TEXT = re.compile(r"(?<![A-Za-z0-9-])([A-Za-z]+[- ]?)\d{1,3}(?![A-Za-z0-9]|-[A-Za-z0-9])")


def exact_counts(
    question: str,
    passages: Sequence[Passage],
    today: dt.date | None = None,
    known_lines: Sequence[str] = (),
    aliases: Aliases | None = None,
) -> dict[int, int]:
    """How many of the question's exact groups each passage contains (chunk id to count).

    A passage that names no line at all (a fault-code table) but has a code or date the
    question names counts as matching the question's line too: it applies to every line. One
    that names only other lines does not, nor does a general one when the line is all the
    question names exactly ("the cam track of the Line 3 capper" wants the Line 3 schedule,
    not the general greasing advice).
    """
    groups = [[t.casefold() for t in g] for g in exact_groups(question, today, aliases)]
    if not groups:
        return {}
    line_groups = len(line_mentions(question))  # exact_groups puts them last
    asked = named_lines(question, known_lines)  # named lines are codes among the groups: "WL-1"
    out = {}
    for p in passages:
        blob = f"{p.title}\n{p.text}".casefold()
        n = sum(any(t in blob for t in g) for g in groups)
        if n and (line_groups or asked) and not names_a_line(blob, known_lines):
            n += line_groups + len(asked)
        if n:
            out[p.chunk_id] = n
    return out


_EVENT = re.compile(
    r"\b(?:why did|when did|when was|what happened|last time|how long was)\b|为什么|什么时候|上次|发生了什么", re.IGNORECASE
)
_DATED_RECORD = re.compile(
    r"^\s*(?:[^:;\n]{0,24}:[^;\n]*;\s*)?[^:;\n]{0,24}(?:date|日期)[^:;\n]{0,24}:\s*\d{4}-\d{2}-\d{2}", re.IGNORECASE | re.MULTILINE
)


def asks_about_an_event(question: str, today: dt.date | None = None) -> bool:
    """True when a question is about something that happened: it names a date ("on 2026-05-14",
    "last month") or asks why or when ("Why did Line 3 stop?")."""
    return bool(date_strings(question, today)) or bool(_EVENT.search(question))


def is_dated_record(p: Passage) -> bool:
    """True for a row of a log: a table row that starts with when it happened (its first or second
    column a date: "Date: 2026-05-14; Line: ..."). Serves logbooks, which are written in time
    order; a register row whose last column is an effective date ("approved by: ...; effective
    date: ...") is reference data, not an event."""
    return bool(_DATED_RECORD.search(p.text))


_SUPERSEDED = re.compile(
    r"(?:^|[;\n])\s*[^:;\n]{0,16}(?:status|state|状态)[^:;\n]{0,12}:\s*"
    r"(?:superseded|obsolete|void|withdrawn|inactive|expired|retired|cancel+ed|已?作废|已?废止|停用|已?失效|已?过期|已?取消)",
    re.IGNORECASE,
)
_ASKS_OLD = re.compile(
    r"\b(?:superseded|obsolete|withdrawn|void|old|older|previous|former|earlier)\s+(?:revision|version|program|programme|rev)\b"
    r"|\b(?:superseded|obsolete|withdrawn)\b|作废|废止|旧版|老版|以前的?版本|之前的?版本|停用|失效",
    re.IGNORECASE,
)


def is_superseded(p: Passage) -> bool:
    """True for a table row whose status column says it no longer applies ("Status: superseded",
    "状态: 已作废", "obsolete", "停用"). Serves the registers a plant keeps under document control
    (programs, recipes, drawings, settings), which list every revision with its status."""
    return bool(_SUPERSEDED.search(p.text))


def current_preference(question: str, passages: Sequence[Passage]) -> dict[int, int]:
    """Chunk id to 0 for a superseded revision, 1 for the rest: the revision in force answers
    "what is the setting", unless the question asks about an old or superseded one."""
    if _ASKS_OLD.search(question):
        return {}
    return {p.chunk_id: 0 if is_superseded(p) else 1 for p in passages}


def record_preference(question: str, passages: Sequence[Passage], today: dt.date | None = None) -> dict[int, int]:
    """Which kind of document answers this question, for passages that name the same exact things.

    A log row records what happened; a manual or a fault table says what a thing is and how to
    deal with it. "Why did Line 3 stop on 2026-05-14?" wants the log row of that day; "What
    does F-311 mean on the filler?" wants the fault table, not the log rows where F-311 was
    once logged. Chunk id to 1 (preferred), 0 or -1.
    """
    event = asks_about_an_event(question, today)
    return {p.chunk_id: (1 if event else -1) if is_dated_record(p) else 0 for p in passages}


def exact_ranking(
    question: str,
    passages: Sequence[Passage],
    today: dt.date | None = None,
    known_lines: Sequence[str] = (),
    aliases: Aliases | None = None,
) -> list[int]:
    """Chunk ids of passages that contain what the question names exactly, most groups first,
    ties broken by semantic similarity.

    Fault codes repeat across machines and values differ per line, so a passage that names
    the code *and* the machine or line must outrank one that only resembles the question.
    """
    counts = exact_counts(question, passages, today, known_lines, aliases)
    scored = sorted((p for p in passages if p.chunk_id in counts), key=lambda p: (-counts[p.chunk_id], -p.score))
    return [p.chunk_id for p in scored]


DOC_TYPES = {
    ".pdf": "pdf",
    ".xlsx": "spreadsheet",
    ".xlsm": "spreadsheet",
    ".csv": "spreadsheet",
    ".docx": "word",
    ".md": "wiki",
    ".markdown": "wiki",
    ".html": "wiki",
    ".htm": "wiki",
    ".txt": "text",
}
"""Document type of a file by its extension: what ``doc_type`` filters on."""


def doc_type(doc: str) -> str:
    """'pdf', 'spreadsheet', 'word', 'wiki' or 'text' for a document name (else its extension)."""
    ext = doc[doc.rfind(".") :].lower() if "." in doc else ""
    return DOC_TYPES.get(ext, ext.lstrip(".") or "unknown")


@dataclass(frozen=True)
class Filters:
    """What a search is restricted to; None means no restriction."""

    line: str | None = None
    machine: str | None = None
    doc_type: str | None = None
    doc: str | None = None

    def allows(self, p: Passage) -> bool:
        """True when the passage is in scope: its line or plant-wide, naming the machine (in its
        document name, heading path or text), of the document type, from the document."""
        if not line_allows(p.line, self.line):
            return False
        if self.machine and self.machine.casefold() not in f"{p.doc}\n{p.title}\n{p.text}".casefold():
            return False
        if self.doc_type and doc_type(p.doc) != self.doc_type.lower():
            return False
        return not (self.doc and p.doc != self.doc)

    def __bool__(self) -> bool:
        return any((self.line, self.machine, self.doc_type, self.doc))
