"""`lineside status`: one screen with each service's state, version and model, what the knowledge base
holds, today's questions by status with p50/p95, and the last errors in the logs."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
from prometheus_client.parser import text_string_to_metric_families

from lineside import __version__, audit
from lineside.bus import Bus, BusError
from lineside.client import kb_list
from lineside.metrics import service_port
from lineside.settings import Connection
from lineside.supervisor import SERVICES
from schemas import topics

STATUS_WAIT_S = 1.0
"""Retained status messages arrive right after subscribing; a second is plenty on loopback."""

LAST_ERRORS = 5


class ServiceState(msgspec.Struct, kw_only=True):
    """One service as `lineside status` sees it."""

    name: str
    state: str
    """online, offline (it said so, or its Last Will did), or unknown (no status on the broker)."""
    version: str = ""
    model: str = ""
    memory_mb: float | None = None
    metrics: str = ""
    """Its /metrics URL when it answered there."""


class Today(msgspec.Struct, kw_only=True):
    """Questions since local midnight, from the audit log."""

    by_status: dict[str, int]
    p50_ms: float | None = None
    p95_ms: float | None = None


class BoxStatus(msgspec.Struct, kw_only=True):
    """Everything `lineside status` shows."""

    broker: str
    services: list[ServiceState]
    documents: int | None = None
    chunks: int | None = None
    today: Today | None = None
    errors: list[dict[str, Any]] = []


async def service_states(conn: Connection, wait_s: float = STATUS_WAIT_S) -> dict[str, str]:
    """The retained online/offline of every service that ever published one."""
    states: dict[str, str] = {}
    async with Bus(conn, subscriptions=(topics.STATUS_ALL,)) as bus:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                async for m in bus.messages():
                    name = topics.status_service(m.topic)
                    if name:
                        states[name] = m.payload.decode(errors="replace")
    return states


def scrape(url: str, timeout_s: float = 1.0) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples by metric name from one /metrics endpoint ({} when it does not answer)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:  # noqa: S310 - a local http:// URL built here
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def today(data_dir: Path) -> Today | None:
    """Today's questions from the audit log (None when there is none)."""
    path = data_dir / audit.FILE_NAME
    if not path.is_file():
        return None
    midnight = dt.datetime.combine(dt.date.today(), dt.time()).timestamp()
    log = audit.AuditLog(path)
    try:
        records = log.query(since=midnight)
    finally:
        log.close()
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    latencies = [r.latency_ms for r in records if r.status in ("answered", "fallback")]
    return Today(by_status=counts, p50_ms=percentile(latencies, 0.5), p95_ms=percentile(latencies, 0.95))


def last_errors(logs: Path, n: int = LAST_ERRORS) -> list[dict[str, Any]]:
    """The last ``n`` error records across the services' JSON logs, oldest first."""
    found: list[dict[str, Any]] = []
    for path in sorted(logs.glob("*.log")) if logs.is_dir() else []:
        with path.open(errors="replace") as f:
            for line in f:
                if '"level": "error"' not in line and '"level": "critical"' not in line:
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                found.append({k: rec.get(k) for k in ("timestamp", "service", "event", "request_id", "reason", "exception") if rec.get(k)})
    found.sort(key=lambda r: str(r.get("timestamp", "")))
    return found[-n:]


async def gather(conn: Connection, *, metrics_base: int | None, metrics_host: str = "127.0.0.1") -> BoxStatus:
    """Ask the broker, the retriever, each /metrics, the audit log and the logs."""
    data = Path(conn.data_dir)
    try:
        states = await service_states(conn)
        broker = f"reachable at {conn.mqtt_host}:{conn.mqtt_port}"
    except BusError as exc:
        states, broker = {}, f"unreachable: {exc}"
    names = [*SERVICES, *sorted(n for n in states if n.startswith("llm-"))]
    services = []
    for name in names:
        s = ServiceState(name=name, state=states.get(name, "unknown"))
        if metrics_base:
            url = f"http://{metrics_host}:{service_port(metrics_base, name)}/metrics"
            samples = await asyncio.to_thread(scrape, url)
            if samples:
                s.metrics = url
                info = samples.get("lineside_build_info", [({}, 0.0)])[0][0]
                s.version, s.model = info.get("version", ""), info.get("model", "")
                rss = samples.get("process_resident_memory_bytes")
                s.memory_mb = round(rss[0][1] / 2**20, 1) if rss else None
        services.append(s)
    status = BoxStatus(broker=broker, services=services, today=await asyncio.to_thread(today, data), errors=last_errors(data / "logs"))
    if states.get("retriever") == "online":
        with contextlib.suppress(TimeoutError, BusError):
            docs = await kb_list(conn, timeout_s=5.0)
            status.documents, status.chunks = len(docs), sum(int(d["chunks"]) for d in docs)
    return status


def render(s: BoxStatus) -> str:
    """The status screen as text."""
    lines = [f"Lineside {__version__} — broker {s.broker}", ""]
    lines.append(f"{'service':10} {'state':8} {'version':8} {'memory':>9}  model")
    for svc in s.services:
        memory = f"{svc.memory_mb:.0f} MiB" if svc.memory_mb is not None else "-"
        lines.append(f"{svc.name:10} {svc.state:8} {svc.version or '-':8} {memory:>9}  {svc.model or '-'}")
    lines.append("")
    kb = f"{s.documents} documents, {s.chunks} chunks" if s.documents is not None else "unknown (the retriever did not answer)"
    lines.append(f"knowledge base: {kb}")
    if s.today is None:
        lines.append("questions today: no audit log yet")
    else:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(s.today.by_status.items())) or "none"
        lines.append(f"questions today: {counts}")
        if s.today.p50_ms is not None and s.today.p95_ms is not None:
            lines.append(f"answer time today: p50 {s.today.p50_ms / 1000:.1f} s, p95 {s.today.p95_ms / 1000:.1f} s")
    lines.append("")
    if s.errors:
        lines.append("last errors:")
        lines += [
            f"  {e.get('timestamp', '')} {e.get('service', '')}: {e.get('event', '')} {e.get('reason', '')}".rstrip() for e in s.errors
        ]
    else:
        lines.append("no errors in the logs")
    return "\n".join(lines)
