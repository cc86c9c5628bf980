"""Production lines as devices and documents name them: part of the device contract."""

from __future__ import annotations


def normalise_line(value: str) -> str:
    """'Line 3', 'line3', 'L3' and '3' all name line 3 (the gateway and the retriever read them alike)."""
    v = value.strip().lower().replace(" ", "")
    for prefix in ("line", "l"):
        if v.startswith(prefix) and v[len(prefix) :].isdigit():
            return v[len(prefix) :]
    return v
