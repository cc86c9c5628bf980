"""Pure decisions of the operators' device-account requests: what may be added or removed, and why not."""

from __future__ import annotations

from collections.abc import Sequence

from lineside.errors import ConfigError
from lineside.security.accounts import BUILTIN, Account, check_device_name
from schemas.messages import DeviceAddRequest, DeviceInfo

MAX_LINE_CHARS = 64
"""A production line's name ("WL-2", "Line 3 packing"): short; a longer one is a paste mistake."""


def check_add(req: DeviceAddRequest) -> tuple[str, str | None]:
    """The device name and line (None: plant-wide) to add, or ConfigError saying what is wrong."""
    name = req.name.strip()
    if not name:
        raise ConfigError("give the device a name (letters, digits, '.', '_' and '-', e.g. tab-wl2)")
    check_device_name(name)
    line = (req.line or "").strip() or None
    if line is not None:
        if len(line) > MAX_LINE_CHARS:
            raise ConfigError(f"the line name is {len(line)} characters long: at most {MAX_LINE_CHARS}")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in line):
            raise ConfigError("the line name must be one line of text, without control characters")
    return name, line


def check_remove(operator: str, name: str, accounts: Sequence[Account]) -> str:
    """The device account to remove, or ConfigError: never the operator's own account, a built-in
    account, or a name that is not a device."""
    name = name.strip()
    if not name:
        raise ConfigError("say which device to remove")
    if name == operator:
        raise ConfigError(
            f"{name} is the account you are logged in with: another operator, or `lineside device remove` on the box, can remove it"
        )
    if name.lower() in BUILTIN:
        raise ConfigError(f"{name} is a built-in account of the box's services and cannot be removed")
    if not any(a.name == name and a.kind == "device" for a in accounts):
        raise ConfigError(f"no device named {name}: refresh the list")
    return name


def is_operator(name: str, accounts: Sequence[Account]) -> bool:
    """True when ``name`` is a registered operator account (the ACL already lets only operators ask)."""
    return any(a.name == name and a.kind == "device" and a.role == "operator" for a in accounts)


def device_infos(accounts: Sequence[Account]) -> list[DeviceInfo]:
    """The device accounts by name, as the page lists them: no password hash."""
    devices = sorted((a for a in accounts if a.kind == "device"), key=lambda a: a.name)
    return [DeviceInfo(name=a.name, line=a.line, role=a.role, can_ingest=a.can_ingest) for a in devices]
