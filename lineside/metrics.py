"""Prometheus metrics: one registry per service process, served on its own /metrics port (docs/operations.md).

Names follow Prometheus conventions: ``lineside_`` prefix, ``_total`` counters, ``_seconds``
histograms, ``_bytes`` sizes. Labels carry only values from a fixed set chosen in code (a status, a
reason code, a result): never a question, a device name or a password.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from lineside import __version__
from lineside.runtime import Counters
from lineside.settings import load
from schemas import topics

DEFAULT_BASE_PORT = 9810
"""`lineside up` serves metrics from here: gateway 9810, retriever 9811, llm 9812, ingest 9813,
more llm workers 9814, 9815... (a range no common exporter uses; ``--metrics-port`` moves it)."""

OFFSETS = {"gateway": 0, "retriever": 1, "llm": 2, "ingest": 3}
"""Each service's port is the base plus its offset; ``llm-<k>`` (k >= 2) gets base + 2 + k."""

ANSWER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0, 120.0)
"""Answer and generation time: a quoted fallback takes tens of milliseconds, a generated answer
2-20 s on 2 cores, and the gateway gives up after 120 s."""

FAST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Retrieval and time to first token: tens of milliseconds to a few seconds."""


def service_port(base: int, name: str) -> int:
    """The metrics port of service ``name`` (``gateway``, ``llm-2``...) for the base port ``base``."""
    module, _, worker = name.partition("-")
    if worker:
        return base + OFFSETS["llm"] + int(worker)
    return base + OFFSETS[module]


class MetricsSettings(msgspec.Struct, kw_only=True):
    """Where a service serves /metrics (environment ``LINESIDE_<SERVICE>_METRICS_PORT`` / ``_HOST``)."""

    port: Annotated[int, msgspec.Meta(description="TCP port of /metrics (0: no metrics endpoint)", ge=0, le=65535)] = 0
    host: Annotated[str, msgspec.Meta(description="Address /metrics listens on (loopback unless Prometheus scrapes from elsewhere)")] = (
        "127.0.0.1"
    )


class _Counted(Collector):
    """``lineside_invalid_messages_total`` read from a service's own ``Counters`` when scraped."""

    def __init__(self) -> None:
        self.counters: Counters | None = None

    def collect(self) -> Iterable[Metric]:
        """The count of messages that failed to decode and were skipped."""
        family = CounterMetricFamily("lineside_invalid_messages", "Messages that failed to decode and were skipped")
        family.add_metric([], float(self.counters.values.get("invalid", 0)) if self.counters else 0.0)
        yield family


class ServiceMetrics:
    """What every service exports: process figures (RSS, CPU, open files), its version and model,
    MQTT reconnects and messages that failed to decode."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.info = Gauge(
            "lineside_build_info",
            "Always 1: the service, its version and its model",
            ["service", "version", "model"],
            registry=self.registry,
        )
        self.info.labels(service, __version__, "").set(1)
        self.reconnects = Counter("lineside_mqtt_reconnects", "Connections to the broker lost and tried again", registry=self.registry)
        self._counted = _Counted()
        self.registry.register(self._counted)

    def watch(self, counters: Counters) -> None:
        """Export the service's own counters (messages that failed to decode)."""
        self._counted.counters = counters

    def set_model(self, model: str) -> None:
        """Name the model the service runs in ``lineside_build_info``."""
        self.info.clear()
        self.info.labels(self.service, __version__, model).set(1)

    def on_reconnect(self, log: Any) -> Callable[[str, float], None]:
        """The reconnect callback of ``run_forever``: count it and log it."""

        def note(err: str, wait: float) -> None:
            self.reconnects.inc()
            log.warning("reconnecting", error=err, wait_s=round(wait, 2))

        return note

    def serve(self, settings: MetricsSettings, log: Any) -> str | None:
        """Serve /metrics on a thread; the URL, or None when off or the port is taken (logged, the service goes on)."""
        if not settings.port:
            return None
        try:
            start_http_server(settings.port, addr=settings.host, registry=self.registry)
        except OSError as exc:
            log.warning("metrics_unavailable", port=settings.port, host=settings.host, reason=str(exc))
            return None
        url = f"http://{settings.host}:{settings.port}/metrics"
        log.info("metrics", url=url)
        return url

    def serve_from_env(self, log: Any) -> str | None:
        """``serve`` with the settings of ``LINESIDE_<SERVICE>_METRICS_PORT`` and ``_HOST``."""
        return self.serve(load(MetricsSettings, f"LINESIDE_{self.service.upper()}_METRICS_"), log)


class BrokerStats(Collector):
    """The broker's own figures, from the ``$SYS`` messages the gateway reads (Mosquitto publishes them
    every ``sys_interval``, 10 s by default)."""

    TOPICS: ClassVar[dict[str, tuple[str, str, str]]] = dict(
        zip(
            topics.BROKER_STATS,
            (
                ("lineside_broker_clients_connected", "gauge", "Clients connected to the broker"),
                ("lineside_broker_messages_received", "counter", "Messages the broker received"),
                ("lineside_broker_messages_sent", "counter", "Messages the broker sent"),
                ("lineside_broker_messages_dropped", "counter", "Messages the broker dropped (queues of offline or slow clients full)"),
            ),
            strict=True,
        )
    )

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def update(self, topic: str, payload: bytes) -> bool:
        """Take one ``$SYS`` figure; False when the topic is not one of ``TOPICS`` or not a number."""
        if topic not in self.TOPICS:
            return False
        try:
            self.values[topic] = float(payload.decode("ascii", "replace").strip())
        except ValueError:
            return False
        return True

    def collect(self) -> Iterator[Metric]:
        """The figures received so far (none before the broker's first $SYS round)."""
        for topic, (name, kind, doc) in self.TOPICS.items():
            if topic not in self.values:
                continue
            family: Metric = GaugeMetricFamily(name, doc) if kind == "gauge" else CounterMetricFamily(name, doc)
            family.add_metric([], self.values[topic])  # type: ignore[attr-defined]
            yield family


class GatewayMetrics(ServiceMetrics):
    """Questions by outcome, answer time, the waiting queue, audit writes, and the broker's figures."""

    def __init__(self, data_dir: Path | None = None) -> None:
        super().__init__("gateway")
        r = self.registry
        self.questions = Counter(
            "lineside_questions",
            "Questions answered, by status and reason code (fallback reason, error code, or extractive: answered with source lines)",
            ["status", "reason"],
            registry=r,
        )
        self.answer_seconds = Histogram(
            "lineside_answer_seconds",
            "Time from a question's arrival to its answer, by status",
            ["status"],
            buckets=ANSWER_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("lineside_gateway_queue_depth", "Questions waiting for a gateway worker", registry=r)
        self.audit_failures = Counter("lineside_audit_write_failures", "Answers that could not be written to the audit log", registry=r)
        self.broker = BrokerStats()
        r.register(self.broker)
        self.disk_free = Gauge("lineside_data_dir_free_bytes", "Free space for Lineside on the data directory's file system", registry=r)
        self.disk_size = Gauge("lineside_data_dir_size_bytes", "Size of the data directory's file system", registry=r)
        if data_dir is not None:
            self.disk_free.set_function(lambda: _disk(data_dir)[0])
            self.disk_size.set_function(lambda: _disk(data_dir)[1])

    def answered(self, status: str, reason: str, seconds: float) -> None:
        """Count one final answer."""
        self.questions.labels(status, reason).inc()
        self.answer_seconds.labels(status).observe(seconds)


class RetrieverMetrics(ServiceMetrics):
    """Search time and queue, what the index holds and its size on disk, documents indexed."""

    def __init__(self, index_dir: Path | None = None) -> None:
        super().__init__("retriever")
        r = self.registry
        self.retrieval_seconds = Histogram(
            "lineside_retrieval_seconds", "Time to search the index for one question", buckets=FAST_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("lineside_retriever_queue_depth", "Searches waiting for a worker", registry=r)
        self.documents = Gauge("lineside_index_documents", "Documents in the knowledge base", registry=r)
        self.chunks = Gauge("lineside_index_chunks", "Chunks (searchable passages) in the knowledge base", registry=r)
        self.indexed = Counter("lineside_indexed_documents", "Documents handed to the index, by result", ["result"], registry=r)
        self.size = Gauge("lineside_index_size_bytes", "Size of the index files on disk", registry=r)
        if index_dir is not None:
            self.size.set_function(lambda: float(_dir_size(index_dir)))

    def holds(self, documents: int, chunks: int) -> None:
        """What the index holds now."""
        self.documents.set(documents)
        self.chunks.set(chunks)


class LlmMetrics(ServiceMetrics):
    """Time to first token, generation time, tokens and tokens/s, the queue, the answer cache."""

    def __init__(self, worker: str = "llm") -> None:
        super().__init__("llm")
        self.worker = worker
        r = self.registry
        self.ttft_seconds = Histogram(
            "lineside_llm_ttft_seconds", "Time to the first generated token", buckets=(*FAST_BUCKETS, 20.0, 30.0), registry=r
        )
        self.generation_seconds = Histogram(
            "lineside_llm_generation_seconds", "Time to write one answer (prompt and generation)", buckets=ANSWER_BUCKETS, registry=r
        )
        self.tokens = Counter("lineside_llm_generated_tokens", "Tokens generated", registry=r)
        self.tokens_per_second = Gauge("lineside_llm_tokens_per_second", "Generation speed of the last answer the model wrote", registry=r)
        self.queue_depth = Gauge("lineside_llm_queue_depth", "Questions waiting for the model", registry=r)
        self.cache_hits = Counter("lineside_llm_cache_hits", "Answers served from the answer cache", registry=r)
        self.cache_misses = Counter("lineside_llm_cache_misses", "Answers the model had to write (not in the cache)", registry=r)
        self.requests = Counter("lineside_llm_requests", "Generate requests, by result", ["result"], registry=r)

    def generated(self, seconds: float, ttft_s: float, tokens: int) -> None:
        """One answer the model wrote."""
        self.generation_seconds.observe(seconds)
        if ttft_s > 0:
            self.ttft_seconds.observe(ttft_s)
        self.tokens.inc(tokens)
        writing = seconds - ttft_s if seconds > ttft_s > 0 else seconds  # after the prompt is read, when known
        if tokens and writing > 0:
            self.tokens_per_second.set(tokens / writing)


class IngestMetrics(ServiceMetrics):
    """Documents parsed and failed, chunks produced, the parse queue."""

    def __init__(self) -> None:
        super().__init__("ingest")
        r = self.registry
        self.documents = Counter("lineside_ingest_documents", "Documents ingested, by result (parsed, failed)", ["result"], registry=r)
        self.chunks = Counter("lineside_ingest_chunks", "Chunks produced from parsed documents", registry=r)
        self.queue_depth = Gauge("lineside_ingest_queue_depth", "Documents waiting to be parsed", registry=r)


def _disk(path: Path) -> tuple[float, float]:
    """(free bytes for an unprivileged user, total bytes) of the file system holding ``path``."""
    try:
        st = os.statvfs(path)
    except OSError:
        return 0.0, 0.0
    return float(st.f_bavail * st.f_frsize), float(st.f_blocks * st.f_frsize)


def _dir_size(path: Path) -> int:
    """Bytes in the files directly under ``path`` (0 when it does not exist)."""
    try:
        return sum(e.stat().st_size for e in os.scandir(path) if e.is_file())
    except OSError:
        return 0
