"""Shared fixtures: a real Mosquitto on a free port, and the four services as real processes."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from lineside import broker as broker_mod
from lineside.client import ingest, wait_online
from lineside.settings import Connection
from lineside.supervisor import SERVICES, Supervisor
from tests.fakes import RecordingLog

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CORPUS = ROOT.parent / "shared" / "corpus-dev"


@pytest.fixture
def log() -> Iterator[RecordingLog]:
    """A log for a service class under test; the test fails if the service logged an exception it
    swallowed, unless the test named it in ``log.expected`` (Home Assistant's fail_on_log_exception)."""
    recorder = RecordingLog()
    yield recorder
    swallowed = recorder.swallowed()
    assert not swallowed, f"the service logged exceptions it swallowed: {swallowed}"


@pytest.fixture
def broker(tmp_path) -> Iterator[Connection]:
    """A fresh Mosquitto from brokers/local.conf on a free 127.0.0.1 port (never 1883)."""
    port = broker_mod.free_port()
    proc = broker_mod.start(port, tmp_path / "broker", log_path=tmp_path / "mosquitto.log")
    try:
        yield Connection(mqtt_host="127.0.0.1", mqtt_port=port, data_dir=str(tmp_path))
    finally:
        proc.terminate()
        proc.wait(5)


class Stack(Supervisor):
    """A running Lineside started by the same supervisor as `lineside up`, plus test helpers."""

    extra_env: dict[str, str] = {}  # noqa: RUF012 - set per instance before start()

    def env(self) -> dict[str, str]:
        """The supervisor's environment plus this test's settings."""
        return {**super().env(), **self.extra_env}

    def start_one(self, name: str) -> None:
        """Start (or restart) one service."""
        self.start_service(name)

    def stop_one(self, name: str) -> int:
        """SIGTERM one service and return its exit code."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGTERM)
        return proc.wait(20)

    def alive(self) -> dict[str, bool]:
        """Which services are still running."""
        return {n: p.poll() is None for n, p in self.procs.items()}

    def events(self, name: str, event: str) -> list[dict]:
        """The JSON log records of one service with ``event``."""
        out = []
        for line in (self.logs / f"{name}.log").read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("event") == event:
                out.append(rec)
        return out

    def errors(self) -> list[str]:
        """Log lines at level error (a swallowed exception) from any service."""
        out = []
        for path in self.logs.glob("*.log"):
            for line in path.read_text(errors="replace").splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("level") in ("error", "critical"):
                    out.append(f"{path.name}: {line}")
        return out


def start_stack(
    data: Path,
    docs: list[Path],
    env: dict[str, str] | None = None,
    services: tuple[str, ...] = SERVICES,
    *,
    secure: bool = False,
) -> Stack:
    """Broker and the services (the four, or ``services``) on a free port, documents ingested, everything online.

    ``secure``: the plant profile (brokers/secure.conf): accounts, ACL, a TLS listener on
    ``stack.tls_port``; the test's own clients use ``stack.client_conn()`` (admin).
    """
    conn = Connection(mqtt_host="127.0.0.1", mqtt_port=broker_mod.free_port(), data_dir=str(data))
    stack = Stack(conn, external_broker=False, services=services, secure=secure, tls_port=broker_mod.free_port() if secure else None)
    stack.extra_env = dict(env or {})
    stack.start()
    conn = stack.client_conn()
    online = asyncio.run(wait_online(conn, services, 240))
    if online != set(services):
        stack.stop()
        pytest.fail(f"services did not come online: {set(services) - online}; logs in {stack.logs}")
    if docs:
        results = asyncio.run(ingest(conn, docs, wait=True, timeout_s=600))
        failed = {n: ev for n, ev in results.items() if ev["stage"] not in ("indexed", "unchanged")}
        if failed:
            stack.stop()
            pytest.fail(f"sample documents failed to ingest: {failed}")
    return stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Iterator[Stack]:
    """The whole system with the sample plant corpus of examples/ ingested.

    Fails at teardown when a service logged an error it swallowed.
    """
    s = start_stack(tmp_path_factory.mktemp("lineside"), sorted((EXAMPLES / "docs").iterdir()))
    try:
        yield s
    finally:
        s.stop()
    errors = s.errors()
    assert not errors, "services logged errors:\n" + "\n".join(errors[:20])
