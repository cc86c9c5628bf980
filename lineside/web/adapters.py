"""The security files the device-account handler changes, and the broker it makes reload them."""

from __future__ import annotations

from pathlib import Path

from lineside.errors import BrokerError
from lineside.security import registry
from lineside.security.accounts import Account
from lineside.security.secure_broker import reload_broker


class Accounts:
    """The box's account registry under ``<data dir>/security`` (blocking: run in a thread)."""

    def __init__(self, data_dir: Path) -> None:
        self.data = Path(data_dir)

    def all(self) -> list[Account]:
        """Every registered device and operator account."""
        return registry.list_devices(self.data)

    def add(self, name: str, line: str | None) -> str:
        """Register a device account; its new password (stored only as a hash)."""
        return registry.add_device(self.data, name, line=line)

    def remove(self, name: str) -> None:
        """Delete a device account from the registry and the broker's files."""
        registry.remove_device(self.data, name)

    def reload(self) -> None:
        """Make the running broker re-read its password file and ACL, as `lineside device` does."""
        pid_file = self.data / "broker" / "mosquitto.pid"
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            raise BrokerError(f"no running broker in {pid_file.parent} (no pid file): it reads the accounts when it starts") from None
        reload_broker(pid)
