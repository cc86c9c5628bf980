"""The ingest service keeps each document it parsed and shows a device the source it asks for,
on that device's own answer topic (services/ingest/service.py, ``on_source``)."""

from __future__ import annotations

import asyncio
import hashlib

import msgspec

from lineside.security import registry
from schemas import topics
from schemas.messages import IngestDocument, SourceView
from services.ingest.inbox import DropFolder
from services.ingest.service import IngestService
from services.ingest.settings import IngestSettings
from services.ingest.transfer import Transfers
from tests.conftest import EXAMPLES
from tests.fakes import FakeBus


def _service(tmp_path, log) -> IngestService:
    settings = IngestSettings(data_dir=str(tmp_path))
    transfers = Transfers(tmp_path / "spool", max_bytes=2**20, stall_s=30, max_active=2)
    return IngestService(settings, DropFolder(tmp_path / "inbox"), transfers, log)


def _views(bus: FakeBus, device: str) -> list[SourceView]:
    return [msgspec.json.decode(p, type=SourceView) for p in bus.on(topics.source_reply(device))]


def test_a_parsed_document_is_kept_and_its_rows_are_shown_to_the_device_that_asks(tmp_path, log):
    svc = _service(tmp_path, log)
    bus = FakeBus()
    content = (EXAMPLES / "docs" / "press_fault_codes.csv").read_bytes()
    doc = IngestDocument(request_id="r", name="press_fault_codes.csv", content=content, sha256=hashlib.sha256(content).hexdigest())
    assert asyncio.run(svc.on_document(bus, doc)) is None  # type: ignore[arg-type]
    assert (tmp_path / "documents" / "press_fault_codes.csv").read_bytes() == content

    ask = b'{"request_id": "s1", "doc": "press_fault_codes.csv", "locator": "row 3"}'
    asyncio.run(svc.on_source(bus, "tab-wl2", ask))  # type: ignore[arg-type]
    (view,) = _views(bus, "tab-wl2")
    assert view.request_id == "s1"
    assert view.kind == "table"
    assert next(r for r in view.rows if r.n == 3).cells[0] == "P-22"


def test_a_bad_request_gets_an_error_saying_what_to_send(tmp_path, log):
    svc = _service(tmp_path, log)
    bus = FakeBus()
    for payload in (b"not json", b'{"doc": "x.pdf"}', b'{"doc": "x.pdf", "locator": "page 1"}'):
        asyncio.run(svc.on_source(bus, "tab-wl2", payload))  # type: ignore[arg-type]
    views = _views(bus, "tab-wl2")
    assert [v.kind for v in views] == ["error", "error", "error"]
    assert "send JSON with doc and locator" in views[1].error.message  # type: ignore[union-attr]
    assert "not kept on the box" in views[2].error.message  # type: ignore[union-attr]


def test_a_device_is_told_its_own_line(tmp_path, log):
    registry.add_device(tmp_path, "tab-wl2", line="WL-2")
    registry.add_device(tmp_path, "hmi-wl9")
    svc = _service(tmp_path, log)
    bus = FakeBus()
    for device in ("tab-wl2", "hmi-wl9"):
        asyncio.run(svc.on_source(bus, device, b'{"what": "device", "doc": "-", "locator": "-", "request_id": "who"}'))  # type: ignore[arg-type]
    assert _views(bus, "tab-wl2")[0].line == "WL-2"
    assert _views(bus, "hmi-wl9")[0].kind == "device"
    assert _views(bus, "hmi-wl9")[0].line == ""
