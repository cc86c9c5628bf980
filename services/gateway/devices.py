"""The device registry the gateway enforces: which line each device may search."""

from __future__ import annotations

import json
from pathlib import Path


class DeviceLines:
    """Lines of the devices registered with `lineside device add --line`, from ``accounts.json``.

    Re-read whenever the file changes (checked at each question: one ``stat``), so adding or
    removing a device needs no gateway restart. No file means no registered devices.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._lines: dict[str, str | None] = {}

    def line_of(self, device: str) -> str | None:
        """The line ``device`` is restricted to, or None when it may search every line."""
        self._refresh()
        return self._lines.get(device)

    def _refresh(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._lines = None, {}
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self._lines = {a["name"]: a.get("line") for a in data.get("accounts", []) if a.get("kind") == "device"}
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return  # half-written or unreadable: keep the last good registry and try again next time
        self._stamp = stamp
