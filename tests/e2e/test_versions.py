"""A changed document re-ingested keeps its previous version; `lineside kb rollback` makes it live
again, and the box answers as it did before the change."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from lineside.client import ask, ingest, kb_delete
from tests.conftest import Stack

pytestmark = pytest.mark.e2e

DOC = "wl2_clamp_settings.md"
QUESTION = "What clamp torque does station ST-07 on line WL-2 need?"


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LINESIDE_MQTT_PORT": str(stack.conn.mqtt_port), "LINESIDE_DATA_DIR": str(stack.data)}
    return subprocess.run([sys.executable, "-m", "lineside.cli", *args], capture_output=True, text=True, timeout=60, check=False, env=env)


def _edition(path, torque: int) -> None:
    path.write_text(f"# WL-2 clamp settings\n\n## Station ST-07\n\nThe clamp of station ST-07 on line WL-2 is tightened to {torque} N·m.\n")


def test_rollback_makes_the_previous_version_live_and_restores_the_old_answer(stack, tmp_path):
    doc = tmp_path / DOC
    try:
        for torque in (47, 52):
            _edition(doc, torque)
            assert asyncio.run(ingest(stack.conn, [doc], wait=True, timeout_s=60))[DOC]["stage"] == "indexed"
        history = _cli(stack, "kb", "history", DOC)
        assert history.returncode == 0, history.stderr
        rows = history.stdout.splitlines()[1:]
        assert len(rows) == 2
        assert rows[0].endswith("live")
        assert "replaced" in rows[1]
        old_version = rows[1].split()[0]

        rolled = _cli(stack, "kb", "rollback", DOC)
        assert rolled.returncode == 0, rolled.stderr
        assert f"version {old_version} is live again" in rolled.stdout
        answer = asyncio.run(ask(stack.conn, {"question": QUESTION, "request_id": "rollback-1"}, device="hmi-wl2"))
        assert answer["status"] == "answered", answer
        assert "47" in answer["answer"]
        assert answer["sources"][0]["doc"] == DOC

        again = _cli(stack, "kb", "rollback", DOC, "--to", old_version)
        assert again.returncode == 1
        assert "live one already" in again.stderr
    finally:
        asyncio.run(kb_delete(stack.conn, DOC))
