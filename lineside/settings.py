"""Settings from environment variables, typed and described.

Every service has one settings class, a ``msgspec.Struct`` whose fields carry a
``Meta(description=...)``. ``load(cls, prefix)`` fills it from ``<prefix><FIELD>``
environment variables; the shared connection fields use ``LINESIDE_MQTT_HOST``,
``LINESIDE_MQTT_PORT`` and ``LINESIDE_DATA_DIR`` for every service.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec

from lineside.errors import ConfigError

T = TypeVar("T", bound=msgspec.Struct)

SHARED_ENV = {
    "mqtt_host": "LINESIDE_MQTT_HOST",
    "mqtt_port": "LINESIDE_MQTT_PORT",
    "mqtt_username": "LINESIDE_MQTT_USERNAME",
    "mqtt_password": "LINESIDE_MQTT_PASSWORD",
    "mqtt_password_file": "LINESIDE_MQTT_PASSWORD_FILE",
    "mqtt_tls": "LINESIDE_MQTT_TLS",
    "mqtt_ca_file": "LINESIDE_MQTT_CA_FILE",
    "data_dir": "LINESIDE_DATA_DIR",
}


def default_data_dir() -> str:
    """Where Lineside keeps its index, models and broker state unless told otherwise."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "lineside")


def default_model_dir() -> str:
    """Shared cache of assembled model files (they are big: one copy per machine)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "lineside" / "models")


class Connection(msgspec.Struct, kw_only=True):
    """How to reach the broker and where data lives; shared by every service and the CLI."""

    mqtt_host: Annotated[str, msgspec.Meta(description="Broker host name or address")] = "127.0.0.1"
    mqtt_port: Annotated[int, msgspec.Meta(description="Broker TCP port", ge=1, le=65535)] = 1883
    mqtt_username: Annotated[str | None, msgspec.Meta(description="Broker user name, if the broker requires one")] = None
    mqtt_password: Annotated[str | None, msgspec.Meta(description="Broker password (environment or file only)")] = None
    mqtt_password_file: Annotated[
        str | None, msgspec.Meta(description="File holding the broker password (used when no password is set)")
    ] = None
    mqtt_tls: Annotated[bool, msgspec.Meta(description="Connect with TLS (the broker's TLS listener)")] = False
    mqtt_ca_file: Annotated[
        str | None, msgspec.Meta(description="CA certificate that signed the broker's certificate (default: the system CAs)")
    ] = None
    data_dir: Annotated[str, msgspec.Meta(description="Directory for the index, broker state and logs")] = msgspec.field(
        default_factory=default_data_dir
    )


def load(cls: type[T], prefix: str, overrides: dict[str, Any] | None = None) -> T:
    """Build ``cls`` from the environment (``prefix`` + upper-case field name) and ``overrides``."""
    raw: dict[str, Any] = {}
    for name in cls.__struct_fields__:
        env = SHARED_ENV.get(name, f"{prefix}{name.upper()}")
        if env in os.environ:
            raw[name] = os.environ[env]
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        settings = msgspec.convert(raw, cls, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"bad setting: {exc} (environment prefix {prefix})") from exc
    if isinstance(settings, Connection) and settings.mqtt_password is None and settings.mqtt_password_file:
        settings.mqtt_password = read_password(settings.mqtt_password_file)
    return settings


def read_password(path: str) -> str:
    """A password from a file (surrounding whitespace dropped), or a ConfigError naming the file."""
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the broker password file {path}: {exc.strerror}") from exc
    if not value:
        raise ConfigError(f"the broker password file {path} is empty")
    return value
