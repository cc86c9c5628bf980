"""The account registry ``accounts.json`` and the broker files rendered from it: services, admin and devices.

Changes take a file lock, so two `lineside device add` at once cannot lose an account. The passwords
of the built-in accounts are generated here into ``secrets/`` with mode 0600, never put on a command line.
"""

from __future__ import annotations

import contextlib
import fcntl
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

import msgspec

from lineside.errors import ConfigError
from lineside.security.accounts import BUILTIN, Account, check_device_name
from lineside.security.acl import render_acl
from lineside.security.layout import SecurityPaths, paths, write_atomic
from lineside.security.passwords import DEVICE_PASSWORD_BYTES, SERVICE_PASSWORD_BYTES, hash_password, verify_password


class _Registry(msgspec.Struct, kw_only=True):
    version: int = 1
    accounts: list[Account] = msgspec.field(default_factory=list)


@contextlib.contextmanager
def _locked(sp: SecurityPaths) -> Iterator[None]:
    """Serialise changes to the registry between processes (two `lineside device add` at once)."""
    sp.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (sp.root / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _load(sp: SecurityPaths) -> list[Account]:
    if not sp.accounts.exists():
        return []
    try:
        return msgspec.json.decode(sp.accounts.read_bytes(), type=_Registry).accounts
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{sp.accounts} is not a valid account registry: {exc} (restore it from a backup)") from exc


def _save(sp: SecurityPaths, accounts: list[Account]) -> None:
    data = msgspec.json.format(msgspec.json.encode(_Registry(accounts=accounts)), indent=2)
    write_atomic(sp.accounts, data + b"\n", 0o600)  # holds password hashes


def _ensure_builtin(sp: SecurityPaths, accounts: list[Account]) -> list[Account]:
    """Create missing secrets; (re)hash a built-in account whose secret file changed."""
    sp.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
    by_name = {a.name: a for a in accounts}
    for name in BUILTIN:
        secret_path = sp.secret(name)
        if not secret_path.exists():
            write_atomic(secret_path, secrets.token_urlsafe(SERVICE_PASSWORD_BYTES).encode(), 0o600)
        password = secret_path.read_text()
        if not password:
            raise ConfigError(f"{secret_path} is empty: delete it and a new password is generated")
        old = by_name.get(name)
        if old is None or old.kind != "service" or not verify_password(password, old.password_hash):
            by_name[name] = Account(name=name, kind="service", password_hash=hash_password(password))
    return _ordered(by_name.values())


def _ordered(accounts: Iterable[Account]) -> list[Account]:
    """Built-in accounts first in a fixed order, then devices by name: stable files, readable diffs."""
    accounts = list(accounts)
    builtin = sorted((a for a in accounts if a.name in BUILTIN), key=lambda a: BUILTIN.index(a.name))
    return builtin + sorted((a for a in accounts if a.name not in BUILTIN), key=lambda a: a.name)


def _write_broker_files(sp: SecurityPaths, accounts: list[Account]) -> None:
    _save(sp, accounts)
    passwd = "".join(f"{a.name}:{a.password_hash}\n" for a in accounts)
    write_atomic(sp.passwd, passwd.encode(), 0o600)
    write_atomic(sp.acl, render_acl(accounts).encode(), 0o600)


def ensure_services(data_dir: Path) -> dict[str, Path]:
    """Create the service and admin accounts on first use; return account name -> password file."""
    sp = paths(data_dir)
    with _locked(sp):
        accounts = _ensure_builtin(sp, _load(sp))
        _write_broker_files(sp, accounts)
    return {name: sp.secret(name) for name in BUILTIN}


def share_group(data_dir: Path) -> str:
    """The llm workers' shared-subscription group, a name no device can guess.

    Mosquitto does not ACL-check SUBSCRIBE, only delivery: a device that joined a guessable
    group (``$share/llm/...``) would be handed a share of the questions and drop them.
    """
    path = paths(data_dir).secrets / "llm-share-group"
    if not path.exists():
        write_atomic(path, f"llm-{secrets.token_hex(12)}".encode(), 0o600)
    return path.read_text().strip()


def read_secret(data_dir: Path, name: str) -> str:
    """The password of a built-in account, from its file (ensure_services creates it)."""
    path = paths(data_dir).secret(name)
    try:
        return path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"no password file {path}: create the accounts with lineside.security.registry.ensure_services") from None


def write_files(data_dir: Path) -> None:
    """Rewrite ``passwd`` and ``acl`` from ``accounts.json``, each replaced atomically."""
    sp = paths(data_dir)
    with _locked(sp):
        _write_broker_files(sp, _ensure_builtin(sp, _load(sp)))


# ---------------------------------------------------------------------------------------------
# Devices


def add_device(data_dir: Path, name: str, line: str | None = None, can_ingest: bool = False, role: str = "device") -> str:
    """Register a device (or, with ``role="operator"``, an operator) and return its new password:
    it is shown once and stored only as a hash."""
    if role not in ("device", "operator"):
        raise ConfigError(f"unknown role {role!r}: use device or operator")
    check_device_name(name)
    if line is not None and (not line.strip() or any(ord(ch) < 32 for ch in line)):
        raise ConfigError(f"invalid line {line!r}: give a non-empty name on one line, e.g. 'Line 3'")
    sp = paths(data_dir)
    with _locked(sp):
        accounts = _ensure_builtin(sp, _load(sp))
        if any(a.name == name for a in accounts):
            raise ConfigError(f"device {name!r} already exists: remove it first to issue a new password")
        password = secrets.token_urlsafe(DEVICE_PASSWORD_BYTES)
        accounts.append(
            Account(
                name=name,
                kind="device",
                line=line,
                can_ingest=can_ingest or role == "operator",
                password_hash=hash_password(password),
                role="operator" if role == "operator" else "device",
            )
        )
        _write_broker_files(sp, _ordered(accounts))
    return password


DEMO = "demo"
"""The device `lineside up` creates so a first question can be asked at once; remove it on a production box."""


def demo_device(data_dir: Path) -> str | None:
    """Create the ``demo`` device on first use and return its password (kept in ``secrets/demo.password``,
    so `lineside up` can print how to ask every time); None when it was removed on purpose or made by hand."""
    sp = paths(data_dir)
    marker = sp.secrets / "demo.removed"
    if marker.exists():
        return None
    secret = sp.secret(DEMO)
    if secret.exists():
        return secret.read_text().strip()
    if any(a.name == DEMO for a in list_devices(data_dir)):
        return None
    password = add_device(data_dir, DEMO)
    write_atomic(secret, password.encode(), 0o600)
    return password


def remove_device(data_dir: Path, name: str) -> None:
    """Delete a device account; it can no longer connect once the broker has reloaded (reload_broker)."""
    sp = paths(data_dir)
    with _locked(sp):
        accounts = _ensure_builtin(sp, _load(sp))
        if name in BUILTIN:
            raise ConfigError(f"{name!r} is a built-in account and cannot be removed")
        kept = [a for a in accounts if a.name != name]
        if len(kept) == len(accounts):
            raise ConfigError(f"no device named {name!r}: see the registered devices with list_devices")
        _write_broker_files(sp, kept)
    if name == DEMO:
        sp.secret(DEMO).unlink(missing_ok=True)
        write_atomic(sp.secrets / "demo.removed", b"removed on purpose: `lineside up` does not create it again\n", 0o600)


def list_devices(data_dir: Path) -> list[Account]:
    """The registered devices, by name."""
    return sorted((a for a in _load(paths(data_dir)) if a.kind == "device"), key=lambda a: a.name)
