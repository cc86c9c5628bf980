"""Every MQTT topic Lineside uses is built and matched here, and nowhere else.

A parameter (device name, service name, client id) always fills one whole topic
level: it may not be empty or contain ``/``, ``+``, ``#`` or NUL.
"""

from __future__ import annotations

ROOT = "lineside/v1"

ASK = f"{ROOT}/ask"
"""MQTT 5 devices publish questions here with a Response Topic."""

ASK_FILTERS = (ASK, f"{ASK}/+")
"""What the gateway subscribes to: MQTT 5 asks and MQTT 3.1.1 per-device asks."""

ANSWER_ROOT = f"{ROOT}/answer"
INGEST_STATUS = f"{ROOT}/ingest/status"
"""Per-document ingest events (received, parsed, indexed, failed)."""

STATUS_ALL = f"{ROOT}/status/+"
"""Every service's retained online/offline status."""

AUDIT_QUERY = f"{ROOT}/audit/query"
"""The audit log, asked by operator accounts (never devices): ``audit.query.v1`` in, reply on ``audit_reply``."""
AUDIT_REPLY_ROOT = f"{ROOT}/audit/reply"

BROKER_SYS = "$SYS/broker"
"""Mosquitto's own figures, published every ``sys_interval`` (10 s)."""
BROKER_STATS = tuple(f"{BROKER_SYS}/{t}" for t in ("clients/connected", "messages/received", "messages/sent", "publish/messages/dropped"))
"""The broker figures the gateway exports as metrics."""

SOURCE = f"{ROOT}/source"
"""Devices ask to see a source (a PDF page, a table row, a section) on ``source/<device>``; the
ingest service, which keeps the documents, replies on ``answer/<device>/source``."""
SOURCE_FILTER = f"{SOURCE}/+"

INTERNAL = f"{ROOT}/internal"
RETRIEVE = f"{INTERNAL}/retriever/search"
INDEX = f"{INTERNAL}/retriever/index"
KB = f"{INTERNAL}/retriever/kb"
GENERATE = f"{INTERNAL}/llm/generate"
INGEST_DOCUMENT = f"{INTERNAL}/ingest/document"
ADMIN_DEVICES = f"{INTERNAL}/admin/devices"
"""Operator accounts manage device accounts on ``admin/devices/<operator>`` (the web page's server
answers on the operator's reply inbox); the topic is what proves which operator asks."""
ADMIN_DEVICES_FILTER = f"{ADMIN_DEVICES}/+"

_FORBIDDEN = ("/", "+", "#", "\x00")
MAX_LEVEL_LEN = 64
"""Device and client names are short identifiers; a long one is a mistake or an attack."""


class TopicError(ValueError):
    """A topic parameter is not a valid single topic level."""


def level(value: str, what: str = "name") -> str:
    """Return ``value`` if it can fill one whole topic level, else raise TopicError."""
    if not value:
        raise TopicError(f"{what} is empty")
    if len(value) > MAX_LEVEL_LEN:
        raise TopicError(f"{what} is longer than {MAX_LEVEL_LEN} characters")
    for ch in _FORBIDDEN:
        if ch in value:
            raise TopicError(f"{what} {value!r} contains {ch!r}, which cannot be part of a topic level")
    return value


def ask_device(device: str) -> str:
    """Topic where an MQTT 3.1.1 device publishes its questions."""
    return f"{ASK}/{level(device, 'device')}"


def answer_device(device: str) -> str:
    """Topic where an MQTT 3.1.1 device receives its answers (and root of its MQTT 5 reply topics)."""
    return f"{ANSWER_ROOT}/{level(device, 'device')}"


def stream_topic(answer_topic: str) -> str:
    """Topic for partial (streamed) answers that belong to ``answer_topic``."""
    return f"{answer_topic}/stream"


def sources_topic(answer_topic: str) -> str:
    """Topic for the passages found for a streamed question, sent before the answer is written."""
    return f"{answer_topic}/sources"


def source_device(device: str) -> str:
    """Topic where a device asks to see a source."""
    return f"{SOURCE}/{level(device, 'device')}"


def source_reply(device: str) -> str:
    """Topic where a device receives the source it asked to see."""
    return f"{answer_device(device)}/source"


def _name_after(topic: str, root: str, what: str) -> str | None:
    """The single level after ``root/`` in ``topic``, checked as a name of ``what``; else None."""
    prefix = root + "/"
    if not topic.startswith(prefix):
        return None
    try:
        return level(topic[len(prefix) :], what)
    except TopicError:
        return None


def device_of_source(topic: str) -> str | None:
    """Device name from ``lineside/v1/source/<device>``, else None."""
    return _name_after(topic, SOURCE, "device")


def admin_devices(operator: str) -> str:
    """Topic where an operator account asks to list, add or remove device accounts."""
    return f"{ADMIN_DEVICES}/{level(operator, 'operator')}"


def operator_of_admin(topic: str) -> str | None:
    """Operator name from ``.../internal/admin/devices/<operator>``, else None."""
    return _name_after(topic, ADMIN_DEVICES, "operator")


def status(service: str) -> str:
    """Retained online/offline status of one service."""
    return f"{ROOT}/status/{level(service, 'service')}"


def status_service(topic: str) -> str | None:
    """The service whose status ``topic`` is, or None when it is not a status topic."""
    prefix = f"{ROOT}/status/"
    if topic.startswith(prefix) and "/" not in topic[len(prefix) :] and topic[len(prefix) :]:
        return topic[len(prefix) :]
    return None


def shared(group: str, topic_filter: str) -> str:
    """MQTT 5 shared subscription: subscribers in ``group`` each get a share of ``topic_filter``'s messages."""
    return f"$share/{level(group, 'share group')}/{topic_filter}"


def reply_inbox(client_id: str) -> str:
    """Private inbox where a client receives replies to its internal requests."""
    return f"{INTERNAL}/reply/{level(client_id, 'client id')}"


def audit_reply(client_id: str) -> str:
    """Where an operator's tool receives its audit replies."""
    return f"{AUDIT_REPLY_ROOT}/{level(client_id, 'client id')}"


def device_of_ask(topic: str) -> str | None:
    """Device name from ``lineside/v1/ask/<device>``; None for the MQTT 5 topic or any other topic."""
    return _name_after(topic, ASK, "device")


def device_of_reply_topic(response_topic: str) -> str | None:
    """Device name from a reply topic under ``lineside/v1/answer/<device>/``, else None."""
    prefix = ANSWER_ROOT + "/"
    if not response_topic.startswith(prefix):
        return None
    name = response_topic[len(prefix) :].split("/", 1)[0]
    try:
        return level(name, "device")
    except TopicError:
        return None


def is_valid_publish_topic(topic: str) -> bool:
    """True when ``topic`` can be published to: non-empty, no wildcards, no NUL."""
    return bool(topic) and not any(ch in topic for ch in ("+", "#", "\x00")) and len(topic) <= 512
