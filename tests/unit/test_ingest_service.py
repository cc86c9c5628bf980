"""The ingest service class: status events, chunks handed on, the drop folder and piecewise transfers."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from schemas import codec, topics
from schemas.messages import IndexChunks, IngestDocument, IngestPart, IngestStatus
from services.ingest.inbox import DropFolder
from services.ingest.service import Dropped, IngestService
from services.ingest.settings import IngestSettings
from services.ingest.transfer import Assembled, Transfers

MiB = 2**20


class FakeBus:
    """Records what would be published; ``messages`` yields what the test queued, then waits."""

    def __init__(self, inbound: list[bytes] | None = None) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.inbound = inbound or []

    async def publish(self, topic: str, payload: bytes) -> None:
        self.published.append((topic, payload))

    async def messages(self) -> AsyncIterator[Any]:
        for payload in self.inbound:
            yield Inbound(topic=topics.INGEST_DOCUMENT, payload=payload)
        await asyncio.Event().wait()

    def statuses(self) -> list[IngestStatus]:
        """The status events published, in order."""
        return [msgspec.json.decode(p, type=IngestStatus) for t, p in self.published if t == topics.INGEST_STATUS]

    def indexed(self) -> list[IndexChunks]:
        """The chunk messages handed to the retriever, in order."""
        decode = codec.decoder(IndexChunks)
        return [decode.decode(p) for t, p in self.published if t == topics.INDEX]


@dataclass
class Inbound:
    """The two fields of ``lineside.bus.Inbound`` the decoder reads."""

    topic: str
    payload: bytes


class Log:
    """Records log calls as (level, event, fields)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **kw: self.records.append((level, event, kw))

    def events(self, event: str) -> list[dict[str, Any]]:
        """The fields of every record of ``event``."""
        return [kw for _, e, kw in self.records if e == event]


@pytest.fixture
def make(tmp_path: Path):
    """Build an IngestService on tmp_path, prepared as ``run`` does; open transfers are closed at teardown."""
    made: list[Transfers] = []

    def build(**kw: Any) -> IngestService:
        settings = IngestSettings(data_dir=str(tmp_path), **kw)
        transfers = Transfers(
            tmp_path / "ingest" / "spool",
            max_bytes=int(settings.max_document_mb * MiB),
            stall_s=settings.transfer_stall_s,
            max_active=settings.max_transfers,
        )
        made.append(transfers)
        svc = IngestService(settings, DropFolder(tmp_path / "inbox"), transfers, Log())
        svc.prepare()
        return svc

    yield build
    for t in made:
        t.close()


def _doc(name: str, content: bytes, rid: str = "r1") -> IngestDocument:
    return IngestDocument(request_id=rid, name=name, content=content, sha256=hashlib.sha256(content).hexdigest())


def _parts(data: bytes, piece: int, *, name: str = "doc.md", rid: str = "p1") -> list[IngestPart]:
    total = max(1, -(-len(data) // piece))
    sha = hashlib.sha256(data).hexdigest()
    return [
        IngestPart(request_id=rid, name=name, seq=i, total=total, size=len(data), sha256=sha, data=data[i * piece : (i + 1) * piece])
        for i in range(total)
    ]


MANUAL = b"# Pump P-201\n\n## Torque\n\nFlange bolts: 85 N\xc2\xb7m\n"


def test_a_whole_document_is_announced_parsed_and_handed_on(make):
    svc, bus = make(max_document_mb=1.0), FakeBus()
    assert asyncio.run(svc.on_document(bus, _doc("w.md", MANUAL))) is None
    assert [s.stage for s in bus.statuses()] == ["received", "parsed"]
    [chunks] = bus.indexed()
    assert chunks.doc == "w.md"
    assert bus.statuses()[1].chunks == len(chunks.chunks) == 2
    assert bus.statuses()[1].doc_id == chunks.doc_id
    assert svc.log.events("parsed")[0]["chunks"] == 2


def test_a_bad_document_fails_with_its_reason_and_nothing_is_indexed(make):
    svc, bus = make(), FakeBus()
    reason = asyncio.run(svc.on_document(bus, _doc("prog.exe", b"MZ")))
    assert reason is not None
    assert "unsupported file type .exe" in reason
    assert [(s.stage, s.reason) for s in bus.statuses()] == [("received", ""), ("failed", reason)]
    assert bus.indexed() == []
    assert svc.counters.values == {"failed": 1}


def test_pieces_are_reassembled_announced_once_and_the_spool_file_removed(make):
    svc, bus = make(), FakeBus()
    parts = _parts(MANUAL, 10)

    async def go() -> None:
        for p in parts:
            await svc.on_message(bus, p)
        job = svc.jobs.get_nowait()
        assert isinstance(job, Assembled)
        await svc.on_assembled(bus, job)
        assert not job.path.exists()

    asyncio.run(go())
    assert [s.stage for s in bus.statuses()] == ["received", "parsed"]
    assert len(bus.indexed()) == 1
    [received] = svc.log.events("transfer_received")
    assert received["pieces"] == len(parts)
    assert received["bytes"] == len(MANUAL)


def test_a_refused_transfer_fails_at_its_first_piece(make):
    svc, bus = make(max_document_mb=1.0), FakeBus()
    huge = IngestPart(request_id="h", name="big.txt", seq=0, total=3, size=2 * MiB, sha256="0" * 64, data=b"x")
    asyncio.run(svc.on_message(bus, huge))
    [st] = bus.statuses()
    assert st.stage == "failed"
    assert "the limit is" in st.reason
    assert svc.log.events("ingest_failed")[0]["source"] == "pieces"
    assert svc.jobs.empty()


def test_a_stalled_transfer_fails_when_the_stall_timer_runs(make):
    svc, bus = make(transfer_stall_s=0.04), FakeBus()

    async def go() -> None:
        await svc.on_message(bus, _parts(MANUAL, 10)[0])
        task = asyncio.create_task(svc._expire_worker(bus))
        for _ in range(100):
            if bus.statuses():
                break
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(go())
    [st] = bus.statuses()
    assert st.stage == "failed"
    assert "no piece for" in st.reason
    assert list(svc.transfers.spool.iterdir()) == []


def test_a_dropped_file_is_ingested_once_and_a_bad_one_is_parked(make, tmp_path):
    svc, bus = make(), FakeBus()
    good, bad = tmp_path / "inbox" / "w.md", tmp_path / "inbox" / "x.exe"

    async def go() -> None:
        good.write_bytes(MANUAL)
        bad.write_bytes(b"MZ")
        for path in (good, bad):
            await svc.on_file(path)
            await svc.on_file(path)  # already pending: not queued twice
        assert svc.jobs.qsize() == 2
        while not svc.jobs.empty():
            job = svc.jobs.get_nowait()
            assert isinstance(job, Dropped)
            await svc.on_dropped(bus, job)
        await svc.on_file(good)  # same content, already ingested: ignored
        assert svc.jobs.empty()

    asyncio.run(go())
    assert svc.pending == set()
    assert [c.doc for c in bus.indexed()] == ["w.md"]
    assert svc.inbox.is_done("w.md", hashlib.sha256(MANUAL).hexdigest())
    assert not bad.exists()
    assert "unsupported file type .exe" in (tmp_path / "inbox" / "failed" / "x.exe.error.txt").read_text()


def test_a_dropped_file_over_the_limit_is_parked_without_being_read(make, tmp_path):
    svc = make(max_document_mb=0.001)
    big = tmp_path / "inbox" / "big.txt"
    big.write_bytes(b"x" * 2048)
    asyncio.run(svc.on_file(big))
    assert svc.jobs.empty()
    assert (tmp_path / "inbox" / "failed" / "big.txt").exists()
    assert "the limit is 0.0 MiB" in (tmp_path / "inbox" / "failed" / "big.txt.error.txt").read_text()
    assert svc.log.events("ingest_failed")[0]["source"] == "inbox"


def test_consume_serves_the_bus_and_the_drop_folder_and_skips_bad_messages(make, tmp_path):
    svc = make(inbox_poll_s=0.01)
    (tmp_path / "inbox" / "dropped.md").write_bytes(MANUAL)
    bus = FakeBus([b"not msgpack \xc1", codec.encode(_doc("sent.md", MANUAL))])

    async def go() -> None:
        task = asyncio.create_task(svc.consume(bus))  # type: ignore[arg-type]
        for _ in range(300):
            if len(bus.indexed()) == 2:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert sorted(c.doc for c in bus.indexed()) == ["dropped.md", "sent.md"]
    assert svc.counters.values == {"invalid": 1}


def test_prepare_clears_what_an_earlier_run_left_in_the_spool(make, tmp_path):
    spool = tmp_path / "ingest" / "spool"
    spool.mkdir(parents=True)
    (spool / "old.part").write_bytes(b"x")
    svc = make()  # prepares
    assert list(spool.iterdir()) == []
    assert svc.log.events("spool_cleared")[0]["files"] == 1
