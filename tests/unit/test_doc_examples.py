"""Every JSON example in the README and docs is what the contract accepts or sends."""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec
import pytest

from schemas import codec
from schemas.messages import Answer, IngestStatus, StreamDelta

ROOT = Path(__file__).resolve().parents[2]


def _json_examples() -> list[tuple[str, str]]:
    out = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```json\n(.*?)```", path.read_text(encoding="utf-8"), re.S):
            out.append((path.name, block))
    return out


@pytest.mark.parametrize(("source", "block"), _json_examples())
def test_json_example_matches_the_contract(source, block):
    obj = json.loads(block.replace("…", "x"))  # an ellipsis stands for text left out
    raw = json.dumps(obj).encode()
    if "question" in obj:
        assert codec.decode_ask(raw, "application/json").question == obj["question"]
    elif "stage" in obj:
        msgspec.json.decode(raw, type=IngestStatus)
    elif "seq" in obj:
        msgspec.json.decode(raw, type=StreamDelta)
    else:
        msgspec.json.decode(raw, type=Answer)  # raises, naming the field, when an example drifts


def test_the_docs_show_answers_with_evidence_and_a_fallback_reason():
    blocks = " ".join(b for _, b in _json_examples())
    assert '"evidence"' in blocks
    assert '"reason"' in blocks
