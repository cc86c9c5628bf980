"""Whether the plant's documents cover a question: the one decision the gateway and `lineside eval` share.

The retriever reports what it found (passages, their similarity, which of the question's names no
document contains); this module turns that into "answer" or "fall back, because ...", with a
reason code a device can act on. Settings are calibrated on one plant's questions and checked on
another's without change (docs/retrieval.md, "Coverage").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Protocol

import msgspec

from lineside.text import QUANTITY_KINDS
from schemas.messages import FallbackReason, Passage

NOTHING_FOUND: FallbackReason = "nothing_found"
UNKNOWN_LINE: FallbackReason = "unknown_line"
UNKNOWN_MACHINE: FallbackReason = "unknown_machine"
UNKNOWN_CODE: FallbackReason = "unknown_code"
NOT_COVERED: FallbackReason = "not_covered"
REASONS = (NOTHING_FOUND, UNKNOWN_LINE, UNKNOWN_MACHINE, UNKNOWN_CODE, NOT_COVERED)
"""Reason codes of a fallback answer (``Answer.reason``)."""

ABSENT_MIN_WORDS = 3
"""A share of absent words is only judged on questions with at least this many content words."""


ENV_PREFIX = "LINESIDE_COVERAGE_"


class CoverageSettings(msgspec.Struct, kw_only=True):
    """The coverage decision's calibration (environment prefix LINESIDE_COVERAGE_), shared by the gateway and `lineside eval`."""

    threshold: Annotated[
        float,
        msgspec.Meta(
            description="Below this best similarity between the question and a passage, a question whose codes and dates are "
            "not all in its best passage is sent to technical support; calibrated on one plant, checked on another "
            "(docs/retrieval.md, Coverage)",
            ge=-1,
            le=1,
        ),
    ] = 0.28
    absent_share: Annotated[
        float,
        msgspec.Meta(
            description="When at least this share of a question's content words (3 or more of them) is in no document and "
            "no passage has every code and date it names, it is sent to technical support",
            gt=0,
            le=1,
        ),
    ] = 0.5


@dataclass(frozen=True)
class Verdict:
    """Why the documents do not cover a question (``reason`` a code of ``REASONS``), or covered."""

    reason: FallbackReason | None = None
    detail: str = ""

    @property
    def covered(self) -> bool:
        """True when the question may be answered from the documents."""
        return self.reason is None


_LINE_WORD = re.compile(r"\b(?:line|lines)\b|线|产线", re.IGNORECASE)
_CODE_WORD = re.compile(r"\b(?:alarm|fault|error|code|warning|message)s?\b|报警|故障|代码|错误|警告|告警", re.IGNORECASE)


def unknown_kind(term: str, question: str) -> FallbackReason:
    """What kind of name a term no document contains is, from how the question uses it.

    Serves the way technicians name things: a production line is written "Line 4", "4号线" or
    "WL-3 线" (a line word next to it); a fault or alarm code is asked about with "alarm",
    "fault", "code", "报警", "故障"; anything else with letters and digits is a machine, model,
    asset or part.
    """
    if term.startswith("Line ") or term.startswith("line "):
        return UNKNOWN_LINE
    at = question.find(term)
    if at >= 0:
        near = question[max(0, at - 12) : at + len(term) + 6]
        if _LINE_WORD.search(near):
            return UNKNOWN_LINE
    return UNKNOWN_CODE if _CODE_WORD.search(question) else UNKNOWN_MACHINE


class Findings(Protocol):
    """What the retriever found for a question (``RetrieveReply``, or ``SearchResult`` in-process)."""

    @property
    def passages(self) -> Sequence[Passage]: ...
    @property
    def unknown_terms(self) -> Sequence[str]: ...
    @property
    def unknown_lines(self) -> Sequence[str]: ...
    @property
    def other_sites(self) -> Sequence[str]: ...
    @property
    def home_sites(self) -> Sequence[str]: ...
    @property
    def exact_match(self) -> bool: ...
    @property
    def best_score(self) -> float | None: ...
    @property
    def content_words(self) -> int: ...
    @property
    def absent_words(self) -> Sequence[str]: ...


def unstated_quantity(question: str, passages: Sequence[Passage]) -> str | None:
    """The kind of quantity ``question`` asks for ("a price") when none of ``passages`` names it or
    states a value of it, else None.

    Serves questions about something the plant has that ask for a quantity its documents do not
    record: "what does a VX-90 press cost?", "VX-90 压机的单价？" name the machine exactly, so
    every name is found, but no manual page, fault row or log line gives a price, and the nearest
    passages only hold values of other kinds (a power, a temperature) that a model would pass off
    as the answer. A plant whose spare-parts list has a price column states prices, and the
    question goes on. The units and currency signs are those of either language, so a Chinese
    question is judged against English passages and the reverse.
    """
    for kind in QUANTITY_KINDS:
        if kind.asked.search(question) and not any(kind.stated.search(f"{p.title}\n{p.text}") for p in passages):
            return kind.name
    return None


def decide(question: str, found: Findings, settings: CoverageSettings) -> Verdict:
    """Whether the documents cover ``question``, from what the retriever found.

    In order: nothing found; a line, machine or code the question names that no document
    contains (each kind its own reason); another site than the documents are about (the sister
    plant, ``not_covered``); a kind of quantity (a price) that none of the passages states
    (``not_covered``); the best passage contains every code and date the
    question names (covered); most of the question's content words are in no document; the
    best similarity of the question to a passage is below the threshold.
    """
    passages = found.passages
    if not passages:
        return Verdict(NOTHING_FOUND, "no passage found")
    if found.unknown_terms:
        kinds = [UNKNOWN_LINE if t in found.unknown_lines else unknown_kind(t, question) for t in found.unknown_terms]
        kind = next((k for k in (UNKNOWN_LINE, UNKNOWN_CODE, UNKNOWN_MACHINE) if k in kinds), UNKNOWN_MACHINE)
        return Verdict(kind, "not in any document: " + ", ".join(found.unknown_terms))
    if found.other_sites:
        home = ", ".join(found.home_sites) or "this plant"
        return Verdict(NOT_COVERED, f"about site {', '.join(found.other_sites)}: the documents are site {home}'s")
    unstated = unstated_quantity(question, passages)
    if unstated:
        return Verdict(NOT_COVERED, f"asks for {unstated}, which none of the passages found states")
    if found.exact_match:
        return Verdict()
    words, absent = found.content_words, found.absent_words
    if words >= ABSENT_MIN_WORDS and len(absent) >= settings.absent_share * words:
        return Verdict(NOT_COVERED, f"{len(absent)} of the question's {words} words are in no document: " + ", ".join(absent))
    best = max(p.score for p in passages) if found.best_score is None else found.best_score
    if best < settings.threshold:
        return Verdict(NOT_COVERED, f"best score {best:.2f} below {settings.threshold:.2f}")
    return Verdict()
