"""Backup while the box works, restore into a fresh data directory, and the restored box holds the
same knowledge base and finds the same passages for a question (the answer is made from those
passages by the same model, greedily: the same passages give the same answer)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

import pytest

from lineside.client import ingest, kb_delete, kb_list, request_once
from lineside.settings import Connection
from schemas import topics
from schemas.messages import RetrieveReply, RetrieveRequest
from services.retriever import kbcheck
from tests.conftest import start_stack

pytestmark = pytest.mark.e2e

QUESTION = "What torque do the flange bolts on hydraulic pump P-201 need?"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lineside.cli", *args], capture_output=True, text=True, timeout=120, check=False)


async def _search(conn: Connection, question: str) -> list[tuple[str, str, str, float]]:
    def make(rid: str, inbox: str) -> RetrieveRequest:
        return RetrieveRequest(request_id=rid, question=question, reply_to=inbox, top_k=4)

    rep = await request_once(conn, topics.RETRIEVE, make, RetrieveReply, 30)
    return [(p.doc, p.locator, p.text, round(p.score, 4)) for p in rep.passages]


def _kb(conn: Connection) -> list[tuple[str, str, int]]:
    return [(d["doc"], d["version"], d["chunks"]) for d in asyncio.run(kb_list(conn))]


def test_a_backup_taken_while_ingesting_restores_into_a_box_that_finds_the_same(stack, tmp_path):
    notes = tmp_path / "wl2_shift_notes.md"
    notes.write_text("# WL-2 shift notes\n\n## Clamp check\n\nStation ST-04 on WL-2: clamp torque 44 N·m, code F-344 cleared.\n")
    usb = tmp_path / "usb"
    ingesting = threading.Thread(target=lambda: asyncio.run(ingest(stack.conn, [notes], wait=True, timeout_s=60)))
    try:
        ingesting.start()  # the knowledge base is being written while the backup is taken
        made = _cli("backup", "create", str(usb), "--data", str(stack.data))
        ingesting.join(60)
        assert made.returncode == 0, made.stderr
        assert "document(s)" in _cli("backup", "list", str(usb)).stdout

        [backup_file] = list(usb.iterdir())
        restored_dir = tmp_path / "restored"
        restored = _cli("backup", "restore", str(backup_file), "--data", str(restored_dir))
        assert restored.returncode == 0, restored.stderr
        again = _cli("backup", "restore", str(backup_file), "--data", str(restored_dir))
        assert again.returncode == 2
        assert "not empty" in again.stderr
        assert kbcheck.check(restored_dir / "index").ok

        box = start_stack(restored_dir, [], services=("retriever",))
        try:
            restored_kb, found = _kb(box.conn), asyncio.run(_search(box.conn, QUESTION))
        finally:
            box.stop()
        original_kb = _kb(stack.conn)
        # Whole, with the new document or without it: never a part of it.
        assert restored_kb in (original_kb, [d for d in original_kb if d[0] != notes.name])
        assert found == asyncio.run(_search(stack.conn, QUESTION))
        assert found[0][:2] == ("PX-200_Press_Manual.pdf", "page 3")
    finally:
        asyncio.run(kb_delete(stack.conn, notes.name))
