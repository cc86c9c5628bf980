"""Production lines as devices and documents name them: part of the device contract."""

from __future__ import annotations

import re

LINE_MENTION = re.compile(r"\bline\s*(\d{1,2})\b|(\d{1,2})\s*号?\s*线|\bL(\d{1,2})-", re.IGNORECASE)
"""How text names a production line: 'Line 3', '3 线', '3号线', or an asset tag 'L3-FIL-01'."""


def mentioned_lines(text: str) -> list[str]:
    """The line numbers ``text`` names, in order, each once ('Line 3 and L2-CAP-01' -> ['3', '2'])."""
    return list(dict.fromkeys("".join(m) for m in LINE_MENTION.findall(text)))


def normalise_line(value: str) -> str:
    """'Line 3', 'line3', 'L3' and '3' all name line 3 (the gateway and the retriever read them alike)."""
    v = value.strip().lower().replace(" ", "")
    for prefix in ("line", "l"):
        if v.startswith(prefix) and v[len(prefix) :].isdigit():
            return v[len(prefix) :]
    return v
