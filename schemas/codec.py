"""Encoding: JSON at the device edge, MessagePack inside.

Device input is untrusted. ``decode_ask`` turns any payload into an AskRequest or
raises ``BadRequest`` with a message that says what was wrong.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import msgspec

from schemas.messages import MAX_QUESTION_CHARS, Answer, AskRequest, StreamDelta, StreamSources

MSGPACK = "application/msgpack"
MAX_PAYLOAD_BYTES = 16 * 1024
"""A question plus a few fields is well under 16 KiB; a bigger payload is rejected unread."""
MAX_DEPTH = 8
"""AskRequest is flat; allow a little nesting in unknown fields but never a deep tree."""

T = TypeVar("T")
_encoder = msgspec.msgpack.Encoder()
_json_encoder = msgspec.json.Encoder()


class BadRequest(ValueError):
    """A device payload that cannot become a question; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str, request_id: str | int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        """The request id the device sent, when it could be read, so the rejection can echo it."""


def encode(msg: msgspec.Struct) -> bytes:
    """Encode an internal message as MessagePack."""
    return _encoder.encode(msg)


def decoder(inbox: Any) -> msgspec.msgpack.Decoder[Any]:
    """One decoder for the union of messages that may arrive in an inbox."""
    return msgspec.msgpack.Decoder(inbox)


def encode_answer(answer: Answer | StreamDelta | StreamSources, *, msgpack: bool) -> bytes:
    """Encode the device-facing answer: MessagePack for a MessagePack request, JSON otherwise."""
    return _encoder.encode(answer) if msgpack else _json_encoder.encode(answer)


def _json_depth(text: str) -> int:
    """Maximum bracket nesting depth of a JSON text, ignoring brackets inside strings."""
    depth = peak = 0
    in_str = escaped = False
    for ch in text:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            peak = max(peak, depth)
            if peak > MAX_DEPTH:
                return peak
        elif ch in "]}":
            depth -= 1
    return peak


def _depth(obj: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of a decoded object, stopping as soon as it passes ``limit``."""
    stack = [(obj, 1)]
    peak = 0
    while stack:
        item, d = stack.pop()
        if isinstance(item, dict | list):
            peak = max(peak, d)
            if peak > limit:
                return peak
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, d + 1) for c in children)
    return peak


def _convert(obj: Any) -> AskRequest:
    rid = obj.get("request_id") if isinstance(obj, dict) else None
    try:
        return _convert_object(obj)
    except BadRequest as exc:
        if (isinstance(rid, str) and 0 < len(rid) <= 128) or (
            isinstance(rid, int) and not isinstance(rid, bool) and -(2**63) <= rid < 2**63
        ):
            exc.request_id = rid
        raise


def _convert_object(obj: Any) -> AskRequest:
    if not isinstance(obj, dict):
        raise BadRequest("not_an_object", f'payload must be an object with a "question" field, got {type(obj).__name__}')
    if "question" not in obj:
        raise BadRequest("missing_question", 'payload has no "question" field')
    try:
        req = msgspec.convert(obj, AskRequest)
    except msgspec.ValidationError as exc:
        raise BadRequest("invalid_field", f"invalid request: {exc}") from exc
    return _check_question(req)


def _check_question(req: AskRequest) -> AskRequest:
    q = req.question.strip()
    if not q:
        raise BadRequest("empty_question", "the question is empty")
    if len(q) > MAX_QUESTION_CHARS:
        raise BadRequest(
            "question_too_long",
            f"the question has {len(q)} characters; the limit is {MAX_QUESTION_CHARS}",
        )
    if not any(ch.isalnum() for ch in q):
        raise BadRequest("not_a_question", "the question contains no letters or digits")
    if any(ord(ch) < 32 and ch not in "\t\r\n" for ch in q):
        raise BadRequest("control_characters", "the question contains control characters")
    return msgspec.structs.replace(req, question=q)


def decode_ask(payload: bytes, content_type: str | None = None) -> AskRequest:
    """Decode a device's question payload (JSON object, plain text, or MessagePack)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise BadRequest("payload_too_large", f"payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}")
    if not payload.strip():
        raise BadRequest("empty", 'the payload is empty: send the question as text or as {"question": "..."}')
    if content_type == MSGPACK:
        try:
            obj = msgspec.msgpack.decode(payload)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise BadRequest("malformed_msgpack", f"payload is not valid MessagePack: {exc}") from exc
        if _depth(obj) > MAX_DEPTH:
            raise BadRequest("too_deep", f"payload is nested deeper than {MAX_DEPTH} levels")
        return _convert(obj)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("not_utf8", f"payload is not valid UTF-8 (byte {exc.start})") from exc
    text = text.removeprefix("\ufeff")
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        if _json_depth(stripped) > MAX_DEPTH:
            raise BadRequest("too_deep", f"JSON is nested deeper than {MAX_DEPTH} levels")
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise BadRequest(
                "malformed_json", f"payload starts like JSON but is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from exc
        return _convert(obj)
    return _check_question(AskRequest(question=text))
