"""Codes and part numbers as plant documents write them (E-104, HP-4471-B, NV-PX-12, Q34): read
alike by the retriever (exact search) and the LLM service (which lines to quote)."""

from __future__ import annotations

import re

CODE = re.compile(r"\b(?=[A-Za-z0-9-]*\d)(?=[A-Za-z0-9-]*[A-Za-z])[A-Za-z0-9]+(?:-[A-Za-z0-9]+)+\b|\b[A-Z]{1,3}\d{2,}\b")
"""A fault code, part number, model or asset tag: letters and digits joined by hyphens, or a short
capital prefix and digits."""


def identifiers(text: str) -> list[str]:
    """The codes and part numbers ``text`` names (3+ characters), in order, each once."""
    return list(dict.fromkeys(m.group(0) for m in CODE.finditer(text) if len(m.group(0)) >= 3))
