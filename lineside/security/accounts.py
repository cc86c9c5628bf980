"""Who may log in to the broker: the built-in accounts, the account record and the rules for device names."""

from __future__ import annotations

import re
from typing import Literal

import msgspec

from lineside.errors import ConfigError
from schemas import topics

SERVICES = ("gateway", "retriever", "llm", "ingest")
"""The service accounts; each service logs in with its own name and ``secrets/<name>.password``."""
ADMIN = "admin"
"""The operator account of the CLI on the box (``lineside kb list``, ``lineside ingest``, evaluation)."""
WEB = "web"
"""The web page's server (lineside/web): it adds and removes device accounts for operator accounts."""
BUILTIN = (*SERVICES, ADMIN, WEB)

CLIENT_ID_PREFIX = "lineside-"
"""Client ids of the services and the CLI start with this; a device (whose client id is its name) may not."""

Kind = Literal["service", "device"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
"""Device names: one topic level, and safe in the password file (no ':'), the ACL (no spaces) and logs."""


class Account(msgspec.Struct, frozen=True, kw_only=True):
    """One broker login: a built-in account (kind service) or a device."""

    name: str
    kind: Kind
    line: str | None = None
    can_ingest: bool = False
    password_hash: str = ""
    role: Literal["device", "operator"] = "device"
    """A device account's role: an ``operator`` may also send and delete documents and list the
    knowledge base (the web page's operator section; ``lineside user add NAME --role operator``)."""


def check_device_name(name: str) -> str:
    """Return ``name`` if it can be a device account, else raise ConfigError saying why."""
    try:
        topics.level(name, "device name")
    except topics.TopicError as exc:
        raise ConfigError(f"invalid device name: {exc}") from exc
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"invalid device name {name!r}: use letters, digits, '.', '_' and '-', starting with a letter or digit (e.g. hmi-3)"
        )
    if name.lower() in BUILTIN:
        raise ConfigError(f"invalid device name {name!r}: it is reserved for a built-in account ({', '.join(BUILTIN)})")
    if name.lower().startswith(CLIENT_ID_PREFIX):
        raise ConfigError(
            f"invalid device name {name!r}: names starting with {CLIENT_ID_PREFIX!r} are the client ids of the services and the CLI"
        )
    return name
