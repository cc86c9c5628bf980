"""An ingest service killed in the middle of a transfer or a parse: its next start knows which
documents it had taken and never finished, so their senders are told they failed (not left waiting)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from schemas.messages import IngestPart
from services.ingest.transfer import Assembled, Transfers

MiB = 2**20


def _parts(data: bytes, piece: int, *, name: str, rid: str) -> list[IngestPart]:
    total = max(1, -(-len(data) // piece))
    digest = hashlib.sha256(data).hexdigest()
    return [
        IngestPart(request_id=rid, name=name, seq=i, total=total, size=len(data), sha256=digest, data=data[i * piece : (i + 1) * piece])
        for i in range(total)
    ]


def _run(spool: Path) -> Transfers:
    """A service start: a new Transfers on the same spool, cleared."""
    t = Transfers(spool, max_bytes=MiB, stall_s=30.0, max_active=4)
    t.clear()
    return t


def _kill(t: Transfers) -> None:
    """What SIGKILL does to a run: its open files are closed by the OS, nothing else happens."""
    for o in t._open.values():  # the OS closes them
        o.file.close()


def test_a_transfer_cut_by_a_kill_is_reported_failed_at_the_next_start_and_its_late_pieces_are_ignored(tmp_path):
    parts = _parts(b"torque 40 N m on station ST-01 of WL-2\n" * 20, 100, name="wl2_clamps.md", rid="r-cut")
    first = _run(tmp_path / "spool")
    for p in parts[:3]:
        assert first.accept(p) is None
    _kill(first)
    second = _run(tmp_path / "spool")
    [failed] = second.interrupted
    assert (failed.request_id, failed.name) == ("r-cut", "wl2_clamps.md")
    assert "restarted" in failed.reason
    assert "send it again" in failed.reason
    assert all(second.accept(p) is None for p in parts[3:])  # the broker's queued rest: no second verdict
    assert second.active == 0
    assert _run(tmp_path / "spool").interrupted == []  # reported once


def test_a_received_document_killed_before_it_was_handed_on_is_reported_failed(tmp_path):
    first = _run(tmp_path / "spool")
    parts = _parts(b"code F-311 cleared on the HMI\n" * 4, 50, name="wl2_codes.md", rid="r-parse")
    *head, last = parts
    for p in head:
        first.accept(p)
    assert isinstance(first.accept(last), Assembled)  # queued for parsing when the kill came
    assert [f.request_id for f in _run(tmp_path / "spool").interrupted] == ["r-parse"]


def test_documents_handed_on_or_refused_leave_nothing_to_report(tmp_path):
    first = _run(tmp_path / "spool")
    done = _parts(b"a" * 120, 50, name="wl2_ok.md", rid="r-ok")
    for p in done[:-1]:
        first.accept(p)
    assert isinstance(first.accept(done[-1]), Assembled)
    first.handed_on("r-ok")
    broken = _parts(b"b" * 120, 50, name="wl2_broken.md", rid="r-bad")
    first.accept(broken[0])
    assert first.accept(broken[2]) is not None  # a gap: failed and reported by this run
    assert _run(tmp_path / "spool").interrupted == []


def test_a_clean_stop_keeps_the_records_of_unfinished_transfers(tmp_path):
    first = _run(tmp_path / "spool")
    first.accept(_parts(b"c" * 120, 50, name="wl2_open.md", rid="r-open")[0])
    first.close()  # SIGTERM: the spool file goes, the sender still has to be told
    assert not list((tmp_path / "spool").iterdir())
    assert [f.name for f in _run(tmp_path / "spool").interrupted] == ["wl2_open.md"]
