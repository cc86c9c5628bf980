"""Small fakes shared by unit tests: a bus that records publishes, a log that records events.

Integration and end-to-end tests use a real Mosquitto instead (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from lineside.bus import Inbound


class FakeBus:
    """Records what is published; ``messages`` yields what the test (or ``respond``) puts in, then waits.

    ``respond(topic, payload)`` is called for every publish and may return messages
    ``(topic, payload)`` to deliver back, as a service on the other side of the broker would.
    """

    def __init__(self, client_id: str = "fake", respond: Callable[[str, bytes], list[tuple[str, bytes]]] | None = None) -> None:
        self.client_id = client_id
        self.published: list[tuple[str, bytes, dict[str, Any]]] = []
        self.respond = respond
        self._inbound: asyncio.Queue[Inbound] = asyncio.Queue()
        self._published = asyncio.Event()
        self.acked: list[Inbound] = []

    def put(self, topic: str, payload: bytes, **props: Any) -> None:
        """Deliver one message to whoever reads ``messages``."""
        self._inbound.put_nowait(Inbound(topic=topic, payload=payload, **props))

    async def publish(self, topic: str, payload: bytes, **props: Any) -> None:
        """Record a publish (and deliver what ``respond`` answers to it)."""
        self.published.append((topic, payload, props))
        self._published.set()
        if self.respond is not None:
            for t, p in self.respond(topic, payload):
                self.put(t, p)

    async def messages(self) -> AsyncIterator[Inbound]:
        """What was put in, in order; waits for more. Each is recorded in ``acked`` once the consumer
        comes back for the next (when a manual-ack bus acknowledges it)."""
        while True:
            m = await self._inbound.get()
            yield m
            self.acked.append(m)

    async def until(self, check: Callable[[], object]) -> None:
        """Wait until ``check()`` is true, looking again after every publish."""
        while not check():
            self._published.clear()
            await self._published.wait()

    def on(self, topic: str) -> list[bytes]:
        """Payloads published on ``topic``, in order."""
        return [p for t, p, _ in self.published if t == topic]


class RecordingLog:
    """Records structlog-style calls as (level, event, fields)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []
        self.expected: set[str] = set()
        """Events a test provokes on purpose: not counted as swallowed."""

    def __getattr__(self, level: str) -> Any:
        return lambda event, **kw: self.records.append((level, event, kw))

    def events(self, event: str) -> list[dict[str, Any]]:
        """The fields of every record of ``event``."""
        return [kw for _, e, kw in self.records if e == event]

    def swallowed(self) -> list[str]:
        """Events logged as exceptions or errors: a service that kept running after a failure it hid."""
        return [e for level, e, _ in self.records if level in ("exception", "error", "critical") and e not in self.expected]
