"""Piecewise transfer: the service's reassembly decisions and spool files, the client's pieces,
the size limit checked before a file is read, and the CLI's progress output."""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import io
import pathlib
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lineside import cli, client
from lineside.errors import DocumentError
from lineside.settings import Connection
from schemas import codec, topics
from schemas.messages import IngestInbox, IngestPart
from services.ingest.handlers import Reassembly
from services.ingest.transfer import Assembled, Failed, Transfers

MiB = 2**20


def _parts(data: bytes, piece: int, *, name: str = "doc.txt", rid: str = "r1", sha: str | None = None) -> list[IngestPart]:
    total = max(1, -(-len(data) // piece))
    digest = sha or hashlib.sha256(data).hexdigest()
    return [
        IngestPart(request_id=rid, name=name, seq=i, total=total, size=len(data), sha256=digest, data=data[i * piece : (i + 1) * piece])
        for i in range(total)
    ]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make(tmp_path):
    """Build Transfers spooling under tmp_path/spool; open transfers are closed at teardown."""
    made: list[Transfers] = []

    def build(clock: Clock | None = None, **kw: Any) -> Transfers:
        opts: dict[str, Any] = {"max_bytes": MiB, "stall_s": 30.0, "max_active": 4, **kw}
        t = Transfers(tmp_path / "spool", clock=clock or Clock(), **opts)
        t.clear()
        made.append(t)
        return t

    yield build
    for t in made:
        t.close()


# ------------------------------------------------------------------ decisions (handlers.Reassembly)


def test_pieces_in_order_are_kept_and_the_whole_file_checks_out():
    data = b"0123456789" * 10
    parts = _parts(data, 30)
    r = Reassembly(parts[0], MiB)
    kept = b""
    for p in parts:
        assert r.accept(p)
        kept += p.data
    assert r.done
    r.finish()
    assert kept == data


def test_a_redelivered_piece_is_ignored():
    parts = _parts(b"abcdefghij", 4)
    r = Reassembly(parts[0], MiB)
    assert r.accept(parts[0])
    assert r.accept(parts[1])
    assert not r.accept(parts[0])
    assert not r.accept(parts[1])
    assert r.accept(parts[2])
    r.finish()
    assert r.duplicates == 2


@pytest.mark.parametrize(
    ("first", "reason"),
    [
        (
            IngestPart(request_id="r", name="big.pdf", seq=0, total=8192, size=2 * 2**30, sha256="a" * 64, data=b"x"),
            "2048.0 MiB; the limit is 1.0 MiB",
        ),
        (IngestPart(request_id="r", name="a.exe", seq=0, total=1, size=2, sha256="a" * 64, data=b"MZ"), "unsupported file type .exe"),
        (IngestPart(request_id="r", name="../a.md", seq=0, total=1, size=1, sha256="a" * 64, data=b"x"), "path separator"),
        (IngestPart(request_id="r", name="e.md", seq=0, total=1, size=0, sha256="a" * 64, data=b""), "empty (0 bytes)"),
        (IngestPart(request_id="r", name="a.md", seq=0, total=1, size=1, sha256="nothex", data=b"x"), "64 lower-case hex"),
        (IngestPart(request_id="r", name="a.md", seq=0, total=5, size=2, sha256="a" * 64, data=b"x"), "5 pieces cannot hold 2 bytes"),
        (IngestPart(request_id="r", name="a.md", seq=3, total=5, size=50, sha256="a" * 64, data=b"x"), "piece 0 never did"),
        (IngestPart(request_id="", name="a.md", seq=0, total=1, size=1, sha256="a" * 64, data=b"x"), "request id"),
    ],
)
def test_a_transfer_is_refused_at_its_first_piece(first, reason):
    with pytest.raises(DocumentError) as err:
        Reassembly(first, MiB)
    assert reason in err.value.reason


def test_a_missing_piece_fails_the_transfer_naming_it():
    parts = _parts(b"abcdefghij", 2)
    r = Reassembly(parts[0], MiB)
    r.accept(parts[0])
    with pytest.raises(DocumentError) as err:
        r.accept(parts[2])
    assert "piece 1 of 5 is missing" in err.value.reason


def test_a_piece_of_another_file_fails_the_transfer():
    parts = _parts(b"abcdefghij", 5)
    other = _parts(b"ABCDEFGHIJ", 5)
    r = Reassembly(parts[0], MiB)
    r.accept(parts[0])
    with pytest.raises(DocumentError) as err:
        r.accept(other[1])
    assert "different file" in err.value.reason


def test_more_data_than_announced_fails_the_transfer():
    parts = _parts(b"abcdefghij", 5)
    r = Reassembly(parts[0], MiB)
    r.accept(parts[0])
    with pytest.raises(DocumentError) as err:
        r.accept(msgspec.structs.replace(parts[1], data=b"123456"))
    assert "more than the announced 10 bytes" in err.value.reason


def test_a_damaged_piece_fails_the_checksum_at_the_end():
    parts = _parts(b"abcdefghij", 5)
    r = Reassembly(parts[0], MiB)
    r.accept(parts[0])
    r.accept(msgspec.structs.replace(parts[1], data=b"fghiX"))
    with pytest.raises(DocumentError) as err:
        r.finish()
    assert "checksum mismatch" in err.value.reason


# ------------------------------------------------------------------ spool files (transfer.Transfers)


def test_pieces_are_reassembled_in_a_spool_file(tmp_path, make):
    data = bytes(range(256)) * 40
    t = make()
    parts = _parts(data, 1000, name="table.csv")
    outcomes = [t.accept(p) for p in parts]
    assert outcomes[:-1] == [None] * (len(parts) - 1)
    done = outcomes[-1]
    assert isinstance(done, Assembled)
    assert done.path.parent == tmp_path / "spool"
    assert done.path.read_bytes() == data
    assert (done.name, done.size, done.pieces, done.duplicates) == ("table.csv", len(data), 11, 0)
    assert t.active == 0


def test_duplicates_during_and_after_a_transfer_are_ignored(tmp_path, make):
    data = b"x" * 100
    t = make()
    parts = _parts(data, 40)
    assert t.accept(parts[0]) is None
    assert t.accept(parts[0]) is None
    assert t.accept(parts[1]) is None
    done = t.accept(parts[2])
    assert isinstance(done, Assembled)
    assert done.duplicates == 1
    assert done.path.read_bytes() == data
    # QoS 1 may redeliver after the end: no second result, no "piece 0 missing" failure.
    assert [t.accept(p) for p in parts] == [None, None, None]


def test_a_failed_transfer_removes_its_spool_file_and_reports_once(tmp_path, make):
    t = make()
    parts = _parts(b"abcdefghij", 4, name="notes.md")
    assert t.accept(parts[0]) is None
    assert len(list((tmp_path / "spool").iterdir())) == 1
    failed = t.accept(parts[2])
    assert isinstance(failed, Failed)
    assert failed.name == "notes.md"
    assert "piece 1 of 3 is missing" in failed.reason
    assert list((tmp_path / "spool").iterdir()) == []
    assert t.accept(parts[1]) is None  # the rest of a failed transfer is ignored


def test_a_wrong_checksum_fails_and_removes_the_spool_file(tmp_path, make):
    t = make()
    parts = _parts(b"abcdefghij", 4, sha="0" * 64)
    assert [t.accept(p) for p in parts[:-1]] == [None, None]
    failed = t.accept(parts[-1])
    assert isinstance(failed, Failed)
    assert "checksum mismatch" in failed.reason
    assert list((tmp_path / "spool").iterdir()) == []


def test_a_stalled_transfer_expires(tmp_path, make):
    clock = Clock()
    t = make(clock, stall_s=5.0)
    parts = _parts(b"abcdefghij", 4, name="slow.txt")
    t.accept(parts[0])
    clock.now += 4.0
    t.accept(parts[1])
    clock.now += 4.0
    assert t.expire() == []  # a piece 4 s ago: still alive
    clock.now += 2.0
    [failed] = t.expire()
    assert failed.name == "slow.txt"
    assert "no piece for 5 s after 2 of 3 pieces" in failed.reason
    assert list((tmp_path / "spool").iterdir()) == []
    assert t.accept(parts[2]) is None  # a late piece does not restart it


def test_touch_restarts_the_stall_timers(tmp_path, make):
    clock = Clock()
    t = make(clock, stall_s=5.0)
    t.accept(_parts(b"abcdefghij", 4)[0])
    clock.now += 4.0
    t.touch()
    clock.now += 4.0
    assert t.expire() == []


def test_an_oversized_announcement_is_refused_before_anything_is_written(tmp_path, make):
    t = make()
    first = IngestPart(request_id="big", name="scan.pdf", seq=0, total=8192, size=2 * 2**30, sha256="a" * 64, data=b"x" * 1000)
    failed = t.accept(first)
    assert isinstance(failed, Failed)
    assert "2048.0 MiB; the limit is 1.0 MiB" in failed.reason
    assert list((tmp_path / "spool").iterdir()) == []
    assert t.accept(msgspec.structs.replace(first, seq=1)) is None  # the rest is dropped quietly


def test_too_many_transfers_at_once_are_refused(tmp_path, make):
    t = make(max_active=2)
    assert t.accept(_parts(b"ab", 1, rid="a")[0]) is None
    assert t.accept(_parts(b"ab", 1, rid="b")[0]) is None
    failed = t.accept(_parts(b"ab", 1, rid="c")[0])
    assert isinstance(failed, Failed)
    assert "already arriving" in failed.reason
    assert t.active == 2


def test_a_hostile_request_id_cannot_name_a_path(tmp_path, make):
    t = make()
    assert t.accept(_parts(b"abcd", 2, rid="../../escape")[0]) is None
    [spooled] = list((tmp_path / "spool").iterdir())
    assert spooled.parent == tmp_path / "spool"
    assert "escape" not in spooled.name


def test_leftovers_of_an_earlier_run_are_cleared(tmp_path):
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "old.part").write_bytes(b"x")
    t = Transfers(tmp_path / "spool", max_bytes=MiB, stall_s=1.0, max_active=1)
    assert t.clear() == 1
    assert list((tmp_path / "spool").iterdir()) == []


# ------------------------------------------------------------------ client: pieces and the size limit


class FakeBus:
    """Records what would be published."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, topic: str, payload: bytes) -> None:
        self.published.append((topic, payload))


def test_the_client_sends_ordered_pieces_that_the_service_reassembles(tmp_path, make):
    data = b"line of a manual\n" * 5000  # 85,000 bytes
    doc = tmp_path / "manual.md"
    doc.write_bytes(data)
    bus = FakeBus()
    progress: list[tuple[str, int, int]] = []
    reason = asyncio.run(
        client._send_pieces(bus, doc, len(data), "rid-1", "Line 3", 16 * 1024, lambda *a: progress.append(a), stopped=lambda: False)
    )
    assert reason is None
    decode = codec.decoder(IngestInbox)
    parts = [decode.decode(payload) for _, payload in bus.published]
    assert {topic for topic, _ in bus.published} == {topics.INGEST_DOCUMENT}
    assert [p.seq for p in parts] == list(range(6))
    assert all(isinstance(p, IngestPart) and p.total == 6 and p.line == "Line 3" for p in parts)
    assert max(len(p.data) for p in parts) == 16 * 1024
    assert progress[0] == ("manual.md", 0, len(data))
    assert progress[-1] == ("manual.md", len(data), len(data))
    t = make()
    done = [t.accept(p) for p in parts][-1]
    assert isinstance(done, Assembled)
    assert done.path.read_bytes() == data


def test_the_client_stops_sending_a_file_the_service_failed(tmp_path):
    doc = tmp_path / "a.txt"
    doc.write_bytes(b"x" * 1000)
    bus = FakeBus()
    asyncio.run(client._send_pieces(bus, doc, 1000, "r", None, 100, None, stopped=lambda: len(bus.published) >= 3))
    assert len(bus.published) == 3


@pytest.fixture
def huge(tmp_path, monkeypatch) -> Path:
    """A sparse 2 GiB file (no disk used) that fails the test if anything opens it."""
    path = tmp_path / "huge_scan.pdf"
    with path.open("wb") as f:
        f.truncate(2 * 2**30)
    real_open, real_path_open = builtins.open, pathlib.Path.open

    def guarded_open(file: Any, *a: Any, **kw: Any) -> Any:
        if Path(str(file)) == path:
            raise AssertionError(f"{path.name} was opened")
        return real_open(file, *a, **kw)

    def guarded_path_open(self: Path, *a: Any, **kw: Any) -> Any:
        if self == path:
            raise AssertionError(f"{path.name} was opened")
        return real_path_open(self, *a, **kw)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(pathlib.Path, "open", guarded_path_open)
    return path


# Port 9 (discard) has no broker: a client that tried to connect would fail with BusError.
NOWHERE = Connection(mqtt_host="127.0.0.1", mqtt_port=9)


def test_a_2gb_file_is_refused_by_the_client_without_reading_it(huge):
    events: list[dict[str, Any]] = []
    result = asyncio.run(client.ingest(NOWHERE, [huge], on_event=events.append))
    assert result == {
        "huge_scan.pdf": {
            "doc": "huge_scan.pdf",
            "stage": "failed",
            "reason": "the document is 2048.0 MiB; the limit is 50.0 MiB (LINESIDE_INGEST_MAX_DOCUMENT_MB)",
        }
    }
    assert events == [result["huge_scan.pdf"]]


def test_the_cli_limit_comes_from_max_mb_or_the_environment(huge, capsys, monkeypatch):
    monkeypatch.setenv("LINESIDE_MQTT_PORT", "9")
    assert cli.main(["ingest", str(huge), "--max-mb", "1", "--wait"]) == 1
    err = capsys.readouterr().err
    assert "failed: huge_scan.pdf: the document is 2048.0 MiB; the limit is 1.0 MiB" in err
    monkeypatch.setenv("LINESIDE_INGEST_MAX_DOCUMENT_MB", "100")
    assert cli.main(["ingest", str(huge)]) == 1
    assert "the limit is 100.0 MiB" in capsys.readouterr().err
    monkeypatch.setenv("LINESIDE_INGEST_MAX_DOCUMENT_MB", "lots")
    assert cli.main(["ingest", str(huge)]) == 2
    assert "LINESIDE_INGEST_MAX_DOCUMENT_MB='lots' is not a number" in capsys.readouterr().err


# ------------------------------------------------------------------ CLI progress output


def _fake_ingest(events: list[dict[str, Any]]) -> Any:
    async def fake(conn: Any, files: list[Path], **kw: Any) -> dict[str, dict[str, Any]]:
        for f in files:
            size = f.stat().st_size
            for sent in (0, size // 2, size):
                kw["on_progress"](f.name, sent, size)
        for ev in events:
            if kw["on_event"]:
                kw["on_event"](ev)
        return {ev["doc"]: ev for ev in events}

    return fake


class TtyStream(io.StringIO):
    """stderr as a terminal."""

    def isatty(self) -> bool:
        return True


def test_progress_is_a_plain_line_per_file_when_stderr_is_not_a_terminal(tmp_path, capsys, monkeypatch):
    (tmp_path / "a.md").write_bytes(b"x" * 3 * MiB)
    final = {"doc": "a.md", "request_id": "r", "stage": "indexed", "chunks": 7}
    monkeypatch.setattr(client, "ingest", _fake_ingest([final]))
    assert cli.main(["ingest", str(tmp_path / "a.md"), "--wait"]) == 0
    out = capsys.readouterr()
    assert out.err.splitlines() == ["  sent      a.md (3.0 MiB)"]
    assert "  indexed   a.md (7 chunks)" in out.out
    assert "1 of 1 document(s) searchable" in out.out


def test_progress_is_a_bar_on_a_terminal_and_status_lines_stay_readable(tmp_path, capsys, monkeypatch):
    (tmp_path / "a.md").write_bytes(b"x" * 2 * MiB)
    monkeypatch.setattr(client, "ingest", _fake_ingest([{"doc": "a.md", "request_id": "r", "stage": "failed", "reason": "no text"}]))
    tty = TtyStream()
    monkeypatch.setattr(sys, "stderr", tty)
    assert cli.main(["ingest", str(tmp_path / "a.md"), "--wait"]) == 1
    err = tty.getvalue()
    assert "[" + "#" * 12 + "." * 12 + "] 1.0/2.0 MiB  50%" in err
    assert "\r\x1b[K  sent      a.md (2.0 MiB)\n" in err
    assert "failed: a.md: no text" in err
    assert "  failed    a.md: no text" in capsys.readouterr().out
