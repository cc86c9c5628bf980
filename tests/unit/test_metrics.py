"""The services' Prometheus metrics: what they count, the broker's $SYS figures, the endpoint itself."""

from __future__ import annotations

import asyncio
import socket
import urllib.request

from lineside import broker as broker_mod
from lineside.metrics import BrokerStats, GatewayMetrics, LlmMetrics, MetricsSettings, service_port
from lineside.runtime import Counters
from schemas import topics
from tests.fakes import RecordingLog
from tests.unit.test_llm_service import FakeBus, FakeModel, request, service


def test_each_service_has_its_own_port_from_the_base():
    assert [service_port(9810, n) for n in ("gateway", "retriever", "llm", "ingest", "llm-2", "llm-3")] == [
        9810,
        9811,
        9812,
        9813,
        9814,
        9815,
    ]


def test_the_llm_counts_generations_tokens_time_to_first_token_and_cache_hits():
    svc, _ = service(FakeModel(["The force ", "is ", "2000 kN."]))
    bus = FakeBus()

    async def go() -> None:
        await svc.generate(bus, request("r-1"))
        await svc.generate(bus, request("r-2"))  # the same prompt: from the cache

    asyncio.run(go())
    value = svc.metrics.registry.get_sample_value
    assert value("lineside_llm_cache_misses_total") == 1
    assert value("lineside_llm_cache_hits_total") == 1
    assert value("lineside_llm_generated_tokens_total") == 3
    assert value("lineside_llm_ttft_seconds_count") == 1
    assert value("lineside_llm_ttft_seconds_sum") == 0.005
    assert value("lineside_llm_generation_seconds_count") == 1
    assert value("lineside_llm_requests_total", {"result": "answered"}) == 2
    assert value("lineside_llm_tokens_per_second") > 0


def test_invalid_messages_are_read_from_the_service_counters():
    metrics = LlmMetrics()
    counters = Counters()
    metrics.watch(counters)
    assert metrics.registry.get_sample_value("lineside_invalid_messages_total") == 0
    counters.inc("invalid")
    counters.inc("invalid")
    assert metrics.registry.get_sample_value("lineside_invalid_messages_total") == 2


def test_broker_figures_are_taken_from_sys_topics_and_nothing_else():
    stats = BrokerStats()
    clients, received = topics.BROKER_STATS[0], topics.BROKER_STATS[1]
    assert stats.update(clients, b"7")
    assert stats.update(received, b"1234")
    assert not stats.update("$SYS/broker/uptime", b"10 seconds")
    assert not stats.update(clients, b"lots")
    families = {f.name: f for f in stats.collect()}
    assert families["lineside_broker_clients_connected"].samples[0].value == 7
    assert families["lineside_broker_messages_received"].type == "counter"
    assert families["lineside_broker_messages_received"].samples[0].value == 1234
    assert "lineside_broker_messages_sent" not in families  # not received yet: not made up


def test_answers_are_counted_by_status_and_reason_only():
    metrics = GatewayMetrics()
    metrics.answered("fallback", "not_covered", 0.2)
    metrics.answered("answered", "", 3.5)
    value = metrics.registry.get_sample_value
    assert value("lineside_questions_total", {"status": "fallback", "reason": "not_covered"}) == 1
    assert value("lineside_answer_seconds_bucket", {"status": "answered", "le": "5.0"}) == 1
    assert value("lineside_answer_seconds_bucket", {"status": "answered", "le": "3.0"}) == 0


def test_the_endpoint_serves_and_a_taken_port_is_logged_not_fatal():
    log = RecordingLog()
    port = broker_mod.free_port()
    metrics = GatewayMetrics()
    url = metrics.serve(MetricsSettings(port=port), log)
    assert url == f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - a local URL
        text = r.read().decode()
    assert "lineside_build_info{" in text
    assert "process_resident_memory_bytes" in text

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        assert GatewayMetrics().serve(MetricsSettings(port=busy), log) is None
    assert log.events("metrics_unavailable")[0]["port"] == busy
    assert GatewayMetrics().serve(MetricsSettings(port=0), log) is None  # off
