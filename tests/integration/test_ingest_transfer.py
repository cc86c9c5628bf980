"""Piecewise ingest against a real broker and the ingest service as a real process.

The retriever does not run: the test subscribes to the index topic itself and sees the
IndexChunks the ingest service hands on, and to the ingest status topic for the events.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lineside.bus import Bus
from lineside.client import PIECE_BYTES, ingest, wait_online
from lineside.settings import Connection
from schemas import codec, topics
from schemas.messages import IndexChunks, IngestPart
from services.ingest.handlers import PARSING

ROOT = Path(__file__).resolve().parents[2]
STALL_S = 3.0
"""Short enough to test a stalled transfer quickly; pieces sent back to back are milliseconds apart."""


@dataclass
class Service:
    """The ingest service process and where its state and log are."""

    conn: Connection
    proc: subprocess.Popen[bytes]
    data: Path
    log: Path

    def log_records(self) -> list[dict[str, Any]]:
        """The service's JSON log lines."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    @property
    def spool(self) -> Path:
        """Where the service keeps transfers in progress."""
        return self.data / "ingest" / "spool"


@pytest.fixture
def service(broker: Connection, tmp_path: Path) -> Iterator[Service]:
    """``python -m services.ingest`` on the test broker; at teardown it must still be alive, have
    logged no error, and stop cleanly on SIGTERM."""
    data = tmp_path / "data"
    log = tmp_path / "ingest.log"
    env = {
        **os.environ,
        "LINESIDE_MQTT_HOST": broker.mqtt_host,
        "LINESIDE_MQTT_PORT": str(broker.mqtt_port),
        "LINESIDE_DATA_DIR": str(data),
        "LINESIDE_INGEST_TRANSFER_STALL_S": str(STALL_S),
    }
    conn = Connection(mqtt_host=broker.mqtt_host, mqtt_port=broker.mqtt_port, data_dir=str(data))
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "services.ingest"], cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    svc = Service(conn=conn, proc=proc, data=data, log=log)
    try:
        if asyncio.run(wait_online(conn, ["ingest"], 30)) != {"ingest"}:
            pytest.fail(f"ingest service did not come online:\n{log.read_text()}")
        yield svc
        assert proc.poll() is None, f"ingest service died:\n{log.read_text()}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    assert proc.returncode == 0, f"ingest service exited with {proc.returncode}:\n{log.read_text()}"
    errors = [r for r in svc.log_records() if r.get("level") in ("error", "critical")]
    assert not errors, f"ingest service logged errors: {errors}"


class Observer:
    """Subscribes to ingest status events and to the index topic, and records both."""

    def __init__(self, conn: Connection) -> None:
        self._bus = Bus(conn, subscriptions=(topics.INGEST_STATUS, topics.INDEX))
        self.events: list[dict[str, Any]] = []
        self.indexed: list[IndexChunks] = []
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._decode = msgspec.msgpack.Decoder(IndexChunks)

    async def __aenter__(self) -> Observer:
        await self._bus.__aenter__()
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader:
            self._reader.cancel()
        await self._bus.__aexit__(None, None, None)

    async def _read(self) -> None:
        async for m in self._bus.messages():
            if m.topic == topics.INGEST_STATUS:
                self.events.append(json.loads(m.payload))
            else:
                self.indexed.append(self._decode.decode(m.payload))
            self._changed.set()

    async def publish(self, part: IngestPart) -> None:
        """Send one hand-made piece."""
        await self._bus.publish(topics.INGEST_DOCUMENT, codec.encode(part))

    def stages(self, rid: str) -> list[str]:
        """Stages reported so far for one request, in order."""
        return [e["stage"] for e in self.events if e.get("request_id") == rid]

    async def until(self, done: Callable[[], Any], timeout_s: float = 30.0) -> Any:
        """Wait until ``done()`` returns something truthy, and return it; checked on every message
        and every 0.1 s (for conditions on files, which no message announces)."""

        async def poll() -> Any:
            while not (result := done()):
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), 0.1)
                except TimeoutError:
                    pass
            return result

        return await asyncio.wait_for(poll(), timeout_s)

    def final(self, rid: str) -> Callable[[], dict[str, Any] | None]:
        """A ``done`` for ``until``: the request's ``parsed`` or ``failed`` event (the last stages without a retriever)."""
        return lambda: next((e for e in self.events if e.get("request_id") == rid and e["stage"] in ("parsed", "failed")), None)


def _parts(data: bytes, rid: str, name: str, piece: int = PIECE_BYTES, size: int | None = None) -> list[IngestPart]:
    total = max(1, -(-len(data) // piece))
    sha = hashlib.sha256(data).hexdigest()
    return [
        IngestPart(
            request_id=rid,
            name=name,
            seq=i,
            total=total,
            size=len(data) if size is None else size,
            sha256=sha,
            data=data[i * piece : (i + 1) * piece],
        )
        for i in range(total)
    ]


def _manual(n_paragraphs: int) -> bytes:
    return "\n\n".join(
        f"Valve V-{i:05d} on filler head {i % 40}: tighten the clamp to {10 + i % 30} N·m and check the seal every {100 + i % 7 * 50} h."
        for i in range(n_paragraphs)
    ).encode()


def test_a_multi_piece_file_is_reassembled_and_its_chunks_published(service: Service, tmp_path: Path) -> None:
    data = _manual(9000)
    assert len(data) > 3 * PIECE_BYTES  # ~1 MB: several pieces
    doc = tmp_path / "filler_valves.txt"
    doc.write_bytes(data)

    async def run() -> tuple[dict[str, Any], IndexChunks, list[str]]:
        async with Observer(service.conn) as obs:
            assert await ingest(service.conn, [doc], wait=False) == {}
            rid = await obs.until(lambda: next((e["request_id"] for e in obs.events if e["doc"] == doc.name), None))
            final = await obs.until(obs.final(rid), 120)
            msg = await obs.until(lambda: next((m for m in obs.indexed if m.request_id == rid), None))
            return final, msg, obs.stages(rid)

    final, msg, stages = asyncio.run(run())
    assert stages == ["received", "parsed"]
    assert final["chunks"] == len(msg.chunks) > 100
    assert msg.doc == "filler_valves.txt"
    assert msg.version == f"{hashlib.sha256(data).hexdigest()}/parse-{PARSING}"
    texts = "\n".join(c.text for c in msg.chunks)
    assert "Valve V-00000 on filler head 0" in texts
    assert "Valve V-08999 on filler head 39" in texts  # the last piece made it too
    [received] = [r for r in service.log_records() if r.get("event") == "transfer_received"]
    assert received["pieces"] == -(-len(data) // PIECE_BYTES)
    assert list(service.spool.iterdir()) == []


def test_a_corrupted_piece_fails_with_a_checksum_reason(service: Service) -> None:
    data = _manual(400)
    parts = _parts(data, "corrupt-1", "damaged.txt", piece=4096)
    bad = bytearray(parts[2].data)
    bad[100] ^= 0xFF
    parts[2] = msgspec.structs.replace(parts[2], data=bytes(bad))

    async def run() -> tuple[dict[str, Any], list[str], list[IndexChunks]]:
        async with Observer(service.conn) as obs:
            for p in parts:
                await obs.publish(p)
            final = await obs.until(obs.final("corrupt-1"))
            await asyncio.sleep(0.5)  # nothing else may follow
            return final, obs.stages("corrupt-1"), obs.indexed

    final, stages, indexed = asyncio.run(run())
    assert stages == ["failed"]
    assert final["doc"] == "damaged.txt"
    assert "checksum mismatch" in final["reason"]
    assert indexed == []
    assert list(service.spool.iterdir()) == []


def test_duplicated_pieces_are_tolerated(service: Service) -> None:
    data = _manual(300)
    parts = _parts(data, "dup-1", "redelivered.txt", piece=4096)
    assert len(parts) >= 4
    # What QoS 1 redelivery after a reconnect looks like: pieces again, in their original order.
    sequence = [parts[0], parts[0], parts[1], parts[2], parts[1], parts[2], *parts[3:], parts[-1], parts[0]]

    async def run() -> tuple[dict[str, Any], list[str], list[IndexChunks]]:
        async with Observer(service.conn) as obs:
            for p in sequence:
                await obs.publish(p)
            final = await obs.until(obs.final("dup-1"))
            await obs.until(lambda: obs.indexed)
            await asyncio.sleep(0.5)  # late duplicates must not produce a second result
            return final, obs.stages("dup-1"), obs.indexed

    final, stages, indexed = asyncio.run(run())
    assert stages == ["received", "parsed"], final
    assert [m.doc for m in indexed] == ["redelivered.txt"]
    assert indexed[0].version == f"{hashlib.sha256(data).hexdigest()}/parse-{PARSING}"
    [received] = [r for r in service.log_records() if r.get("event") == "transfer_received"]
    assert received["duplicates"] == 3  # pieces 0, 1 and 2 again; the two after the end are dropped unseen


def test_a_2gb_announcement_is_refused_at_the_first_piece(service: Service) -> None:
    size = 2 * 2**30
    first = IngestPart(
        request_id="huge-1", name="plant_scan.pdf", seq=0, total=size // PIECE_BYTES, size=size, sha256="a" * 64, data=b"%PDF" + bytes(1000)
    )

    async def run() -> tuple[dict[str, Any], list[str]]:
        async with Observer(service.conn) as obs:
            await obs.publish(first)
            final = await obs.until(obs.final("huge-1"), 10)
            # A client that ignores the refusal and keeps sending gets no second answer.
            await obs.publish(msgspec.structs.replace(first, seq=1))
            await asyncio.sleep(0.5)
            return final, obs.stages("huge-1")

    final, stages = asyncio.run(run())
    assert stages == ["failed"]
    assert final["doc"] == "plant_scan.pdf"
    assert "the document is 2048.0 MiB; the limit is 50.0 MiB" in final["reason"]
    assert list(service.spool.iterdir()) == []


def test_a_stalled_transfer_fails_and_its_spool_file_is_removed(service: Service) -> None:
    parts = _parts(_manual(300), "stall-1", "half_sent.txt", piece=4096)

    async def run() -> tuple[dict[str, Any], float]:
        async with Observer(service.conn) as obs:
            for p in parts[:2]:
                await obs.publish(p)
            await obs.until(lambda: list(service.spool.iterdir()), 5)
            t0 = asyncio.get_running_loop().time()
            final = await obs.until(obs.final("stall-1"), STALL_S * 4)
            return final, asyncio.get_running_loop().time() - t0

    final, waited = asyncio.run(run())
    assert final["stage"] == "failed"
    assert final["doc"] == "half_sent.txt"
    assert f"no piece for {STALL_S:g} s after 2 of {len(parts)} pieces" in final["reason"]
    assert waited < STALL_S * 2
    assert list(service.spool.iterdir()) == []


def test_the_service_survives_bad_transfers_and_still_ingests_a_normal_file(service: Service, tmp_path: Path) -> None:
    good = tmp_path / "compressor_notice.md"
    good.write_text("# Compressor K-7\n\n## Oil\n\nCompressor K-7 takes ISO VG 46 oil, changed every 500 h.\n")
    data = _manual(200)
    bad_parts = _parts(data, "gap-1", "gappy.txt", piece=2048)
    abuse = [
        IngestPart(request_id="huge-2", name="big.pdf", seq=0, total=9000, size=3 * 2**30, sha256="b" * 64, data=b"x"),
        IngestPart(request_id="mid-1", name="orphan.txt", seq=5, total=9, size=90, sha256="c" * 64, data=b"x" * 10),
        IngestPart(request_id="bad-name", name="../../etc/passwd.txt", seq=0, total=1, size=1, sha256="d" * 64, data=b"x"),
        bad_parts[0],
        bad_parts[3],  # pieces 1 and 2 lost
    ]

    async def run() -> tuple[dict[str, dict[str, Any]], dict[str, Any], list[IndexChunks]]:
        async with Observer(service.conn) as obs:
            for p in abuse:
                await obs.publish(p)
            await obs._bus.publish(topics.INGEST_DOCUMENT, b"\x93\x01\x02")  # not a message at all
            failures = {}
            for rid in ("huge-2", "mid-1", "bad-name", "gap-1"):
                failures[rid] = await obs.until(obs.final(rid))
            result = await ingest(service.conn, [good], wait=False)
            assert result == {}
            rid = await obs.until(lambda: next((e["request_id"] for e in obs.events if e["doc"] == good.name), None))
            final = await obs.until(obs.final(rid))
            await obs.until(lambda: any(m.doc == good.name for m in obs.indexed))
            return failures, final, obs.indexed

    failures, final, indexed = asyncio.run(run())
    assert "3072.0 MiB; the limit is 50.0 MiB" in failures["huge-2"]["reason"]
    assert "piece 0 never did" in failures["mid-1"]["reason"]
    assert "path separator" in failures["bad-name"]["reason"]
    assert f"piece 1 of {len(bad_parts)} is missing (piece 3 came next)" in failures["gap-1"]["reason"]
    assert all(f["stage"] == "failed" for f in failures.values())
    assert final["stage"] == "parsed"
    assert [m.doc for m in indexed] == ["compressor_notice.md"]
    assert any("ISO VG 46" in c.text for c in indexed[0].chunks)
    assert service.proc.poll() is None
    assert any(r.get("event") == "invalid_message" for r in service.log_records())
    assert list(service.spool.iterdir()) == []
