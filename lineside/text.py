"""Text and language rules of plant documents, in one place for every service.

Tokenising for BM25, CJK detection, stopwords, codes and part numbers, production lines and the
document size limit. Each rule's docstring names the kind of plant language it serves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_DOCUMENT_MB = 50
"""Largest document accepted, in MiB (LINESIDE_INGEST_MAX_DOCUMENT_MB overrides it): a 300-page
scanned vendor manual is ~40 MiB; anything larger is usually a mistake (a video, an archive)."""
MAX_DOCUMENT_BYTES = MAX_DOCUMENT_MB * 2**20

CJK_CLASS = "\u3400-\u4dbf\u4e00-\u9fff"
"""CJK ideographs (Unified + Extension A): Chinese manuals, notices and table columns."""
CJK_PUNCT_CLASS = "\u3000-\u303f\uff00-\uffef"
"""CJK punctuation and full-width forms (，。：（）), which Chinese text mixes with ideographs."""
CJK_RUN = re.compile(f"[{CJK_CLASS}]+")


def is_cjk(ch: str) -> bool:
    """True for one CJK ideograph or CJK punctuation mark (a line break next to it is not a word break)."""
    return bool(re.match(f"[{CJK_CLASS}{CJK_PUNCT_CLASS}]", ch))


def has_cjk(text: str) -> bool:
    """True when ``text`` contains Chinese ideographs: the question (or document) is Chinese or mixed."""
    return CJK_RUN.search(text) is not None


def language(text: str) -> str:
    """'zh' for text with Chinese in it (a mixed question "VX-70 刮刀压力多少?" is asked in Chinese), else 'en'."""
    return "zh" if has_cjk(text) else "en"


STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "being",
        "by",
        "can",
        "could",
        "do",
        "does",
        "did",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "our",
        "should",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "whose",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "me",
        "my",
        "any",
        "all",
        "also",
        "each",
        "other",
        "about",
        "after",
        "before",
        "during",
        "over",
        "under",
        "much",
        "many",
        "please",
        "tell",
        "show",
        "give",
        "get",
        "got",
        "need",
        "must",
    ]
)
"""English function words and request verbs ("tell me", "please show") that say nothing about what
a technician asks: left out of BM25 queries and of the words a question must share with a line."""


@dataclass(frozen=True)
class AnswerKind:
    """A kind of answer a question can ask for (a price, an interval, a place): how a question asks
    for it, and how a line names it or states a value of it (its units, currency signs or words, in
    either language)."""

    name: str
    asked: re.Pattern[str]
    stated: re.Pattern[str]


QUANTITY_KINDS = (
    AnswerKind(
        "a price",
        re.compile(r"\b(?:prices?|priced|costs?|costed|costing)\b|价格|价钱|多少钱|费用|成本|单价|报价|预算", re.IGNORECASE),
        re.compile(
            r"\b(?:prices?|costs?|EUR|USD|CNY|RMB|GBP|yuan|dollars?|euros?)\b|[$€£¥￥]|元|价格|价钱|单价|费用|成本|报价",
            re.IGNORECASE,
        ),
    ),
    AnswerKind(
        "a weight",
        re.compile(r"\bweigh(?:s|t|ts|ing)?\b|\bmass\b|重量|多重|净重|自重", re.IGNORECASE),
        re.compile(r"\d\s*(?:kg|t|g|lbs?)\b|\bweigh|\bmass\b|重量|净重|自重|公斤|千克|吨", re.IGNORECASE),
    ),
    AnswerKind(
        "a power rating",
        re.compile(r"\b(?:rated power|power (?:rating|draw|consumption)|wattage)\b|功率|耗电量|电耗", re.IGNORECASE),
        re.compile(r"\d\s*(?:k|M)?W\b|\bpower\b|\bwattage\b|功率|千瓦|耗电", re.IGNORECASE),
    ),
)
"""Kinds of quantity a technician asks for that a plant's documents may not state at all: a
machine's purchase price or cost is in no manual, fault table or log, though the machine is
(``lineside.coverage.unstated_quantity``)."""


ANSWER_KINDS = (
    AnswerKind(
        "an interval",
        re.compile(
            r"\bhow (?:often|frequently)\b|\b(?:intervals?|frequency)\b|多久[^，,？?。]{0,8}一次|多长时间[^，,？?。]{0,8}一次|频率|周期",
            re.IGNORECASE,
        ),
        re.compile(
            r"\b(?:every|hourly|daily|weekly|monthly|quarterly|yearly|annually|once|twice|intervals?|frequency)\b|"
            r"\bper (?:shift|day|week|month|year)\b|每|周期|频率|/班|/天|/周|/月|/年",
            re.IGNORECASE,
        ),
    ),
    AnswerKind(
        "a place",
        re.compile(r"\bwhere\b|哪里|哪儿|在哪|放哪|什么位置", re.IGNORECASE),
        # A place word with its value: "Bin: B-03-02", "room 21", "building B", "库位 D1-05-2";
        # a heading that names the storeroom says what the page is about, not where a thing is.
        re.compile(
            r"\b(?i:bins?|shel(?:f|ves)|racks?|rooms?|cabinets?|drawers?|storerooms?|stores?|locations?|buildings?|aisles?|warehouse|zones?)"
            r"(?:\s+(?i:no\.?))?\s*[:#]?\s*(?:[A-Z]{0,3}-?\d[\w./-]*|[A-Z]\b)|(?:库位|货架|仓库|库房|位置|柜|房间)\s*[:：]?\s*[A-Za-z0-9]|\d\s*号?\s*(?:货架|柜|库位|房间|库房)"
        ),
    ),
    *QUANTITY_KINDS,
)
"""Kinds of answer a question's ask can name by its question word: "how often" wants a line that
states an interval (a maintenance table's row, not the procedure's heading), "where" a line that
states a place (the storeroom list's bin, not the manual's spare-parts page). An interval is
"every …", "weekly", "每周", or a column named for it ("Interval: 600 h"); "3 weeks" alone is a
duration (a lead time), not an interval."""


def asked_kind(ask: str) -> AnswerKind | None:
    """The kind of answer ``ask`` asks for, or None when its question word names none ("what", "which").

    Serves questions whose question word says what an answer must state: "how often"/"多久…一次"
    an interval, "where"/"在哪" a place, "how much does it cost"/"价格" a price. A line about the
    same thing that states no value of that kind does not answer the ask.
    """
    return next((k for k in ANSWER_KINDS if k.asked.search(ask)), None)


def bigrams(run: str) -> list[str]:
    """Overlapping character bigrams of a Chinese run (one character stays one token): Chinese
    is written without spaces, and bigrams match words without a dictionary (Lucene's CJK analysis)."""
    return [run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)]


def singular(word: str) -> str:
    """An English word without its plural ending, by Harman's S-stemmer: "batteries" → "battery",
    "valves" → "valve", "spares" → "spare"; "bus", "glass", "gas" and words of under four letters
    are left alone. Serves the many ways a question and a document inflect the same noun ("which
    drawer holds the spares" against a list headed "Spare Part list")."""
    lower = word.casefold()
    if len(word) < 4:
        return word
    if lower.endswith("ies") and not lower.endswith(("eies", "aies")):
        return word[:-3] + ("Y" if word.isupper() else "y")
    if lower.endswith("es") and not lower.endswith(("aes", "ees", "oes")):
        return word[:-1]
    if lower.endswith("s") and not lower.endswith(("us", "ss", "is")):
        return word[:-1]
    return word


LEXICAL_VERSION = "bigrams+singular"
"""How ``lexical_text`` writes text for the BM25 index: an index written another way is rewritten at start."""


def lexical_text(text: str) -> str:
    """Text as the BM25 index stores it, and queries are written for it: Chinese runs become their
    bigrams; English words lose their plural ending (``singular``); the rest is kept."""
    text = re.sub(r"(?<![A-Za-z0-9-])[A-Za-z]{4,}(?![A-Za-z0-9-])", lambda m: singular(m.group(0)), text)
    return CJK_RUN.sub(lambda m: " " + " ".join(bigrams(m.group(0))) + " ", text)


_TOKEN_SPLIT = re.compile(r"[^\w]+|_")


def index_tokens(term: str) -> list[str]:
    """The tokens SQLite FTS5's unicode61 tokenizer makes of ``term`` after ``lexical_text``."""
    return [t for t in _TOKEN_SPLIT.split(lexical_text(term).casefold()) if t]


LATIN_TERM = re.compile(r"[A-Za-z0-9][A-Za-z0-9.,/·°%-]*[A-Za-z0-9%]|[A-Za-z0-9]")
"""A Latin word, number, code or value with its unit as plant documents write them: "F-311",
"12.5", "4,5", "N·m", "60%", "1/2"."""


def lexical_terms(text: str) -> list[str]:
    """Query terms for BM25: Latin words and codes (2+ characters, no stopwords) and the
    character bigrams of Chinese runs, each once."""
    terms: list[str] = []
    for m in LATIN_TERM.finditer(text):
        w = m.group(0).strip(".,")
        if len(w) >= 2 and w.lower() not in STOPWORDS:
            terms.append(w)
    for run in CJK_RUN.findall(text):
        terms.extend(bigrams(run))
    seen: set[str] = set()
    out = []
    for t in terms:
        if t.lower() not in seen:
            seen.add(t.lower())
            out.append(t)
    return out


def terms(text: str) -> set[str]:
    """The words of ``text`` that say what it is about, for comparing a question with a line:
    casefolded Latin words of 2+ characters without stopwords, Chinese bigrams, and each line it
    names as one term ``line#N`` ("Line 3", "3 线", the asset tag "L3-PMP-02" are one line)."""
    words = {w.casefold().strip(".,") for w in LATIN_TERM.findall(text)}
    cjk = {b for run in CJK_RUN.findall(text) for b in bigrams(run) if len(b) == 2}
    lines = {f"line#{n}" for n in mentioned_lines(text)}
    return {w for w in words | cjk if w not in STOPWORDS and len(w) >= 2} | lines


_A = r"(?<![A-Za-z0-9-])"
_Z = r"(?![A-Za-z0-9])"
CODE = re.compile(
    rf"{_A}(?=[A-Za-z0-9.-]*\d)(?=[A-Za-z0-9.-]*[A-Za-z])[A-Za-z0-9]+(?:-[A-Za-z0-9]+(?:\.\d+[A-Za-z0-9]*)?)+{_Z}|{_A}[A-Z]{{1,3}}\d{{2,}}{_Z}"
)
"""A fault code, part number, model or asset tag as plant documents write them: letters and digits
joined by hyphens ("F-311", "HX-2201-C", "L3-PMP-02", "VX-HT-1.5K": a decimal inside a part), or a short capital prefix and digits
("Q18", "P09"). Bounded by non-alphanumerics rather than word boundaries, so a code written
against Chinese ("F-311报警", "WL-2线") is found as in English text."""


def identifiers(text: str) -> list[str]:
    """The codes and part numbers ``text`` names (3+ characters), in order, each once."""
    return list(dict.fromkeys(m.group(0) for m in CODE.finditer(text) if len(m.group(0)) >= 3))


LINE_MENTION = re.compile(r"\bline\s*(\d{1,2})(?!\d)|(\d{1,2})\s*号?\s*线|\bL(\d{1,2})-", re.IGNORECASE)
"""How text names a numbered production line: 'Line 3', '3 线', '3号线', or an asset tag 'L3-PMP-02'."""


def mentioned_lines(text: str) -> list[str]:
    """The line numbers ``text`` names, in order, each once ('Line 3 and L2-BFL-01' -> ['3', '2'])."""
    return list(dict.fromkeys("".join(m) for m in LINE_MENTION.findall(text)))


def normalise_line(value: str) -> str:
    """'Line 3', 'line3', 'L3' and '3' all name line 3; other names ('WL-1') are compared casefolded."""
    v = value.strip().lower().replace(" ", "")
    for prefix in ("line", "l"):
        if v.startswith(prefix) and v[len(prefix) :].isdigit():
            return v[len(prefix) :]
    return v


_CJK_ANY = f"[{CJK_CLASS}{CJK_PUNCT_CLASS}]"
_CJK_GAP = re.compile(rf"\s+(?={_CJK_ANY})|(?<={_CJK_ANY})\s+")


def compare_form(text: str) -> str:
    """Text for comparing what two texts state: whitespace collapsed, none next to Chinese (a line
    break in Chinese is not a word break), casefolded."""
    return _CJK_GAP.sub("", " ".join(text.split())).casefold()


STEP = re.compile(
    r"^\s*(?:(?:step|schritt)\s*\d{1,2}\b|\d{1,2}\s*[.)、:](?!\d)\s*\S|\(\d{1,2}\)|[①-⑳]|第\s*\d{1,2}\s*步|步骤\s*\d{1,2})", re.IGNORECASE
)
"""A numbered step of a procedure as SOPs, work instructions and manuals write it: "1. Isolate",
"2) Lock", "Step 3", "(4)", "③", "第5步", "步骤6". A section number ("6.2 Drive belt renewal") is not
a step."""

MIN_STEPS = 3
"""A block of at least this many numbered lines is a step list (two could be a value table)."""


def step_lines(text: str) -> list[int]:
    """Indices of the lines of ``text`` (``splitlines``, blank lines dropped) that are steps of a
    step list: numbered lines, when there are at least ``MIN_STEPS`` of them."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    found = [i for i, ln in enumerate(lines) if STEP.match(ln)]
    return found if len(found) >= MIN_STEPS else []


_ZH_NUMERALS = {"一": "1", "二": "2", "三": "3", "四": "4", "五": "5", "六": "6", "七": "7", "八": "8", "九": "9", "十": "10"}
SITE_MENTION = re.compile(
    r"\b(?:plant|site|factory|mill|works|werk|usine)\s*-?\s*(\d{1,2})(?![\d.])|(?<![\d一二三四五六七八九十])(\d{1,2}|[一二三四五六七八九十])\s*号?\s*厂(?![商家区内外房长])",
    re.IGNORECASE,
)
"""A numbered site of a company: "Plant 6", "PLANT6", "Site 4", "Werk 1", "六厂", "4号厂"."""


def site_mentions(text: str) -> list[str]:
    """The numbered sites ``text`` names, as their numbers ("Plant 6" and "六厂" are both "6").

    Serves companies with several plants that number them: documents say which plant they are
    for, and technicians ask about "the sister plant", "Plant 4", "四厂"."""
    out = []
    for m in SITE_MENTION.finditer(text):
        number = m.group(1) or m.group(2)
        out.append(_ZH_NUMERALS.get(number, number).lstrip("0") or "0")
    return list(dict.fromkeys(out))


_PREPOSITION = r"(?:(?:at|in|on|for|by|from|to|with|after|before|under|into)\s+)?"
"""A preposition an ask after a comma may start with (", and at what pressure …", ", and in which drawer …")."""
_CLAUSE_SPLIT = re.compile(
    rf"[?？;；]\s*|,\s*and\s+(?={_PREPOSITION}(?:what|where|how|which|when|who|why|is|are|does|do)\b)"
    r"|\s+and\s+(?=(?:what|where|how|which|when|who|why)\b)",
    re.IGNORECASE,
)
_STATEMENT_END = re.compile(r"(?<=\.)\s+(?=[A-Z])")
MIN_CLAUSE_CHARS = 9


def clauses(question: str) -> list[str]:
    """The separate asks of a multi-part question ("What does it mean, and where is the spare kept?"),
    each without the statements that set the scene ("Line 3 stopped on 2026-05-14."). One item
    (or none) for a question that asks one thing.

    Serves questions that ask two or three things in one breath, in English and Chinese."""
    out = []
    for part in _CLAUSE_SPLIT.split(question):
        ask = _STATEMENT_END.split(part.strip(" ,."))[-1].strip(" ,.")
        if len(ask) >= MIN_CLAUSE_CHARS:
            out.append(ask)
    return out


_OPEN_END = re.compile(r"[A-Za-z0-9,\u4e00-\u9fff%°)\]-]$")
"""A line that stops where its sentence has not ended: a word, a number, a comma, a unit, a
closing bracket ("… transmitter PX-7 (range 0 to 16 bar)" / "and controlled by …")."""
_CONTINUES = re.compile(r"^[a-z0-9(\u4e00-\u9fff]")
"""A line that carries on a sentence: it starts in lower case, with a number or in Chinese."""


def wraps_on(line: str, following: str) -> bool:
    """Whether ``following`` carries on the sentence ``line`` leaves open (a line wrapped mid-sentence).

    Serves text extracted from PDF pages, whose lines wrap at the page width: "Do not open the
    guard until the drum reads below 35 °C. On" / "the standard cycle this takes about 70 minutes" is
    one statement, with its value on the second line. Table rows ("Column: value; …"), steps and
    headings are lines of their own and never carry on another line.
    """
    nxt = following.strip()
    return (
        bool(_OPEN_END.search(line.rstrip()))
        and bool(_CONTINUES.match(nxt))
        and "; " not in nxt
        and " | " not in nxt
        and not STEP.match(nxt)
    )


_ROW_KEY = re.compile(r"^[^:;\n]{1,40}:\s*([^;\n]+?)\s*(?:;|$)")


def row_keys(text: str) -> set[str]:
    """The values of the first column of the table rows in ``text`` ("Code: F-311; Machine: …" →
    "f-311"), casefolded. Serves fault tables, parts lists and registers, which key each row by the
    code, part number or product it is about."""
    return {m.group(1).casefold() for m in (_ROW_KEY.match(line.strip()) for line in text.splitlines()) if m}


_SECTION_REF = re.compile(
    r"\b(?:section|chapter|clause|§)\s*(\d{1,2}(?:\.\d{1,2})*)(?![\d.]*\d)|§\s*(\d{1,2}(?:\.\d{1,2})*)|第\s*(\d{1,2}(?:\.\d{1,2})*)\s*[章节条]",
    re.IGNORECASE,
)


def section_references(text: str) -> list[str]:
    """The section numbers ``text`` refers to ("see section 4.2", "as in chapter 7", "按第 5 章", "见第
    3.1 节"), each once, in order. Serves manuals and specifications, which point from an alarm or a
    table to the chapter that says how."""
    return list(dict.fromkeys(next(g for g in m.groups() if g) for m in _SECTION_REF.finditer(text)))


SUBHEADING = re.compile(
    r"^(?:\d{1,2}(?:\.\d{1,2})+\.?\s*\S|\d{1,2}\s+(?:[A-Z][a-z]|[\u4e00-\u9fff])|[一二三四五六七八九十]+、|第[一二三四五六七八九十\d]+[章节部分])"
)
"""A numbered sub-heading inside a page or section, as manuals and specifications number them:
"6.2 Changing the drive belt", "2 Technical Data", "3.2 更换皮带", "二、", "第3章"."""
STEP_ITEM = re.compile(r"^\d{1,2}\s*[.)、:]\s*(?!\d)\S")
"""A numbered step ("1. Isolate", "2) Lock"), which a dotted section number ("4.5 Filter") is not."""
_NOT_HEADING_END = tuple(".!?;:,。！？；：，")
HEADING_CHARS = 60
"""A sub-heading is a short line: longer numbered lines are sentences or table rows."""


def is_subheading(line: str) -> bool:
    """Whether ``line`` is a numbered sub-heading (``SUBHEADING``), not a step, a sentence or a row.

    Serves manuals, specifications and work instructions whose pages run several numbered
    sections on: a chunk should start at a section's heading, not end with it.
    """
    s = line.strip()
    return (
        0 < len(s) <= HEADING_CHARS
        and bool(SUBHEADING.match(s))
        and not STEP_ITEM.match(s)
        and " | " not in s
        and not s.endswith(_NOT_HEADING_END)
    )
