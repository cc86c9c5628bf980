"""Gateway decisions, free of I/O: routing, language, fallback, citations."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from lineside.text import has_cjk, normalise_line
from schemas import codec, topics
from schemas.messages import Answer, AskRequest, ErrorInfo, Evidence, FallbackReason, Passage, RequestId, Source

SNIPPET_CHARS = 240
"""Enough of a passage for a person to recognise it on a handheld screen."""


@dataclass(frozen=True)
class Route:
    """Where and how the answer to one inbound question goes."""

    reply_topic: str | None
    correlation_data: bytes | None
    msgpack: bool
    device: str | None
    verified: bool = False
    """The device is known from the topic it published on (``ask/<device>``), which the broker's ACL
    lets only that device write; on the shared ``ask`` topic it is only what the reply topic claims."""
    refused: str | None = None
    """Why the question's Response Topic was not used (it points outside the device's own answers)."""


def route_of(topic: str, response_topic: str | None, correlation_data: bytes | None, content_type: str | None) -> Route:
    """MQTT 5 Response Topic wins; otherwise a 3.1.1 device's own answer topic; otherwise nowhere.

    A question on a device's own ask topic is never answered outside that device's answer tree:
    a foreign Response Topic is refused and the refusal goes to the device's own topic.
    """
    device = topics.device_of_ask(topic)
    msgpack = content_type == codec.MSGPACK
    refusal = reply_topic_refusal(topic, response_topic)
    if refusal is not None and device is not None:
        return Route(topics.answer_device(device), correlation_data, msgpack, device, verified=True, refused=refusal)
    reply: str | None = None
    verified = device is not None
    if response_topic and topics.is_valid_publish_topic(response_topic):
        reply = response_topic
        device = device or topics.device_of_reply_topic(response_topic)
    elif device:
        reply = topics.answer_device(device)
    return Route(reply_topic=reply, correlation_data=correlation_data, msgpack=msgpack, device=device, verified=verified)


def request_id_of(req: AskRequest | None, correlation_data: bytes | None) -> RequestId:
    """The device's request id as it sent it (a string or an integer), else its correlation data
    as text, else a new id."""
    if req is not None and req.request_id is not None:
        return req.request_id
    if correlation_data:
        try:
            text = correlation_data.decode("utf-8")
            if text.isprintable() and len(text) <= 128:
                return text
        except UnicodeDecodeError:
            pass
        return correlation_data.hex()[:128]
    return uuid.uuid4().hex


def question_key(device: str | None, request_id: RequestId) -> str:
    """What identifies a question: its device and request id (a copy with both is a duplicate)."""
    return f"{device or '-'}/{request_id}"


def language(req: AskRequest) -> str:
    """'zh' for a Chinese question (or lang given as zh*), else 'en'."""
    if req.lang:
        return "zh" if req.lang.lower().startswith("zh") else "en"
    return "zh" if has_cjk(req.question) else "en"


ANSWER_SHORT_CHARS = 80
"""The longest ``answer_short``: an HMI string tag of 80 characters (a Siemens STRING[80], a
WinCC text field) holds it whole."""
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"“(])|(?<=[。！？；])|\n")


def short(text: str, limit: int = ANSWER_SHORT_CHARS) -> str:
    """The first sentence of ``text`` without citation marks, at most ``limit`` characters: cut at
    the last word that fits (anywhere in Chinese, which has no spaces), marked with "…"."""
    plain = re.sub(r"\s+(?=[,.;:!?，。；：！？])", "", " ".join(_CITE.sub("", text).split()))
    first = next((s.strip() for s in _SENTENCE.split(plain) if s.strip()), "")
    first = " ".join(first.split())
    if len(first) <= limit:
        return first
    cut = first[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2 and not has_cjk(cut[space:]):
        cut = cut[:space]
    return cut.rstrip(" ,;:，、") + "…"


def fallback(request_id: RequestId, message: str, latency_ms: float, reason: FallbackReason) -> Answer:
    """The 'contact technical support' answer with why (``lineside.coverage`` reason codes, or
    ``model_unsure`` when the model found no answer in the passages it was given)."""
    return Answer(
        request_id=request_id,
        status="fallback",
        answer=message,
        sources=[],
        model="",
        latency_ms=latency_ms,
        reason=reason,
        answer_short=short(message),
    )


def rejected(request_id: RequestId, code: str, message: str, latency_ms: float = 0.0) -> Answer:
    """A 'rejected' answer saying what was wrong with the input."""
    return Answer(
        request_id=request_id,
        status="rejected",
        answer="",
        sources=[],
        model="",
        latency_ms=latency_ms,
        error=ErrorInfo(code=code, message=message),
        answer_short=short(message),
    )


def failed(request_id: RequestId, status: str, code: str, message: str, latency_ms: float, passages: Sequence[Passage] = ()) -> Answer:
    """A 'busy' or 'error' answer; ``passages`` found before the failure are listed as sources."""
    assert status in ("busy", "error")
    return Answer(
        request_id=request_id,
        status=status,  # type: ignore[arg-type]
        answer="",
        sources=[Source(doc=p.doc, locator=p.locator, score=round(p.score, 4), snippet=snippet(p.text)) for p in passages],
        model="",
        latency_ms=latency_ms,
        error=ErrorInfo(code=code, message=message),
        answer_short=short(message),
    )


_CITE = re.compile(r"[\[【]\s*(\d{1,2}(?:\s*[,，、]\s*\d{1,2})*)\s*[\]】]")


def cited(text: str, n: int) -> list[int]:
    """1-based source numbers cited in ``text`` as [1], [1, 2] or 【1】, in order of first use."""
    out: list[int] = []
    for m in _CITE.finditer(text):
        for part in re.split(r"[,，、]", m.group(1)):
            k = int(part)
            if 1 <= k <= n and k not in out:
                out.append(k)
    return out


def snippet(text: str) -> str:
    """A passage shortened for display."""
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET_CHARS else flat[: SNIPPET_CHARS - 1] + "…"


_DONT_KNOW = re.compile(
    r"\bI (?:don't|do not) know\b|\b(?:does|do) not (?:contain|mention|provide|include)\b|\bno information\b|"
    r"不知道|无法回答|没有提供|没有相关|未提及|未提供",
    re.IGNORECASE,
)
_FACT = re.compile(r"[A-Za-z]*\d[\w.,·°%/±-]*|\b[A-Z]{2,}[\w-]*")


def says_unknown(text: str) -> bool:
    """True when the model answered that the sources do not contain the answer."""
    return not text.strip() or bool(_DONT_KNOW.search(text))


def ungrounded(text: str, passages: Sequence[Passage]) -> bool:
    """True when the model's own words (the first line: a quote of the source may follow) cite no
    passage and state facts (numbers, codes, part numbers) none of which is in any passage given:
    a made-up torque or code must not be sent as an answer."""
    said = text.split("\n", 1)[0]
    if cited(said, len(passages)):
        return False
    facts = {m.group(0).strip(".,").casefold() for m in _FACT.finditer(said)} - {""}
    if not facts:
        return False  # nothing checkable (a sentence without values): the quoted source shows its ground
    blob = "\n".join(f"{p.title} {p.text}" for p in passages).casefold()
    return not any(f in blob for f in facts)


def unsure(text: str, passages: Sequence[Passage]) -> str:
    """Why the model's ``text`` is not an answer to send (it says the passages do not answer, or
    it states values none of ``passages`` has), or "" when it is one."""
    if says_unknown(text):
        return "model found no answer in the passages"
    if ungrounded(text, passages):
        return "the answer states values found in no source"
    return ""


def attribute(text: str, passages: Sequence[Passage]) -> list[int]:
    """1-based numbers of the passages that support ``text``, best supported first.

    A small model rarely writes [n] citations, so support is measured: the answer's facts
    (numbers with units, codes, part numbers, names in capitals) found in each passage.
    Passages that support nothing are left out, unless none supports anything.
    """
    facts = {m.group(0).strip(".,").casefold() for m in _FACT.finditer(text)}
    facts.discard("")
    support = []
    for i, p in enumerate(passages, 1):
        body = f"{p.title} {p.text}".casefold()
        support.append((sum(f in body for f in facts), i))
    ranked = [i for n, i in sorted(support, key=lambda x: (-x[0], x[1])) if n > 0]
    return ranked or list(range(1, len(passages) + 1))


def compose(
    request_id: RequestId,
    text: str,
    passages: Sequence[Passage],
    model: str,
    latency_ms: float,
    *,
    quotes: Sequence[tuple[int, str]] = (),
) -> Answer:
    """The answered reply. Sources: the passages the text cites, in the order it first cites them
    (renumbered [1], [2] …), then the others it draws on (those that support its facts when it
    cites none, and those a quote comes from), highest score first. ``quotes`` (0-based passage
    index, the source's own line) become ``evidence`` with their source numbers; ``answer`` is
    the model's text alone."""
    order = cited(text, len(passages))
    drawn = [] if order else attribute(text, passages)
    drawn += [i + 1 for i, _ in quotes if 0 <= i < len(passages) and i + 1 not in order and i + 1 not in drawn]
    order += sorted(drawn, key=lambda k: -passages[k - 1].score)
    renumber = {old: new for new, old in enumerate(order, 1)}

    def _sub(m: re.Match[str]) -> str:
        nums = [renumber[int(p)] for p in re.split(r"[,，、]", m.group(1)) if int(p) in renumber]
        return "[" + ", ".join(str(k) for k in nums) + "]" if nums else ""

    text = _CITE.sub(_sub, text).strip()
    sources = [
        Source(
            doc=passages[k - 1].doc,
            locator=passages[k - 1].locator,
            score=round(passages[k - 1].score, 4),
            snippet=snippet(passages[k - 1].text),
        )
        for k in order
    ]
    evidence = [Evidence(source=renumber[i + 1], text=q) for i, q in quotes if i + 1 in renumber]
    return Answer(
        request_id=request_id,
        status="answered",
        answer=text,
        sources=sources,
        model=model,
        latency_ms=latency_ms,
        evidence=evidence,
        answer_short=short(text),
    )


def extractive(request_id: RequestId, quotes: Sequence[tuple[int, str]], passages: Sequence[Passage], latency_ms: float) -> Answer:
    """The answer made of the source lines that state what was asked, as the box answers without a
    language model: each line in quotation marks followed by its source's number, sources in the
    order they are quoted, ``model`` "extractive".

    For a question the documents cover whose passages the model could not read (a small model
    answers "I don't know" beside the very line that answers, or writes a value no passage has):
    the technician gets the document's own words and where they are, not a made-up value and not
    a referral to support for something the documents say.
    """
    order = list(dict.fromkeys(i for i, _ in quotes if 0 <= i < len(passages)))
    text = " ".join(f"\u201c{q}\u201d [{order.index(i) + 1}]" for i, q in quotes if i in order)
    return compose(request_id, text, [passages[i] for i in order], "extractive", latency_ms)


def reply_topic_refusal(topic: str, response_topic: str | None) -> str | None:
    """Why a question on a device's own ask topic may not be answered where it asks, or None.

    A device asking on ``lineside/v1/ask/<device>`` gets answers only under its own
    ``lineside/v1/answer/<device>``: otherwise it could make the gateway publish into another
    device's answers, or into any topic the gateway may write.
    """
    device = topics.device_of_ask(topic)
    if device is None or not response_topic:
        return None
    own = topics.answer_device(device)
    if response_topic == own or response_topic.startswith(own + "/"):
        return None
    return f"device {device} may only receive answers under {own}/, not on {response_topic}"


def line_scope(requested: str | None, allowed: str | None) -> tuple[str | None, str | None]:
    """The line a device's search is scoped to, and an error when it asked for another one.

    A device registered with a line always searches that line (plus plant-wide documents);
    asking for a different line is refused rather than silently widened or narrowed.
    """
    if allowed is None:
        return requested, None
    if requested is not None and normalise_line(requested) != normalise_line(allowed):
        return None, f"this device may only ask about {allowed}, not {requested}"
    return allowed, None


class RateLimiter:
    """A token bucket per device: ``burst`` questions at once, refilled at ``per_minute``.

    A device that floods gets ``busy`` at once and the others are still answered. Buckets of
    devices not heard from are forgotten past ``max_devices`` (oldest first).
    """

    def __init__(self, per_minute: float, burst: int, max_devices: int = 10_000) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_devices = max_devices
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, device: str, now: float) -> bool:
        """Take one token for ``device`` at time ``now`` (seconds); False when it has none left."""
        tokens, last = self._buckets.pop(device, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        ok = tokens >= 1.0
        self._buckets[device] = (tokens - 1.0 if ok else tokens, now)
        while len(self._buckets) > self.max_devices:
            del self._buckets[next(iter(self._buckets))]
        return ok


class Availability:
    """Which services are up, from their retained online/offline status messages.

    A family is ``llm`` with its workers ``llm-2`` ... (``lineside up --llm-workers``): it is
    down only when every worker that ever reported is offline. A family never heard of counts
    as up, so a gateway started before the others does not refuse the first questions.
    """

    def __init__(self) -> None:
        self._online: dict[str, bool] = {}

    def update(self, service: str, payload: bytes) -> None:
        """Record one status message (``online``, or ``offline`` from the service or its Last Will)."""
        self._online[service] = payload.strip() == b"online"

    def down(self, family: str) -> bool:
        """True when ``family`` has reported and none of its processes is online now."""
        seen = [up for name, up in self._online.items() if name == family or name.startswith(f"{family}-")]
        return bool(seen) and not any(seen)
