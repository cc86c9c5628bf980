"""Prometheus scrapes every service of a running box; the alert rules and the dashboard use only
metrics the services export; every endpoint's output passes `promtool check metrics`."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from lineside import broker as broker_mod
from lineside import cli
from lineside.client import ask, ingest, wait_online
from lineside.metrics import service_port
from lineside.settings import Connection
from lineside.supervisor import SERVICES
from tests.conftest import EXAMPLES, ROOT, Stack

pytestmark = pytest.mark.e2e

OPS = ROOT / "ops"
QUESTIONS = (
    "What is the nominal press force of the PX-200 press?",
    "What does fault P-22 mean on the PX-200 press?",
    "Which parking spaces are reserved for visitors at the north gate?",  # not in the documents: falls back
)


def _free_base() -> int:
    """A base port with the three ports after it free too (gateway, retriever, llm, ingest)."""
    for _ in range(50):
        base = broker_mod.free_port()
        if base + 3 < 65536 and all(broker_mod.port_free("127.0.0.1", base + i) for i in range(4)):
            return base
    raise AssertionError("no four free ports in a row")


def _get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - a local http:// URL built here
        return str(r.read().decode())


def _promql(prom: str, query: str) -> list[dict]:
    reply = json.loads(_get(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": query})))
    assert reply["status"] == "success", reply
    return list(reply["data"]["result"])


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    """The four services with metrics on, the sample documents ingested."""
    data = tmp_path_factory.mktemp("metrics")
    conn = Connection(mqtt_host="127.0.0.1", mqtt_port=broker_mod.free_port(), data_dir=str(data))
    stack = Stack(conn, external_broker=False)
    stack.metrics_port = _free_base()
    stack.start()
    try:
        assert asyncio.run(wait_online(conn, SERVICES, 120)) == set(SERVICES), f"services did not come online; logs in {stack.logs}"
        results = asyncio.run(ingest(conn, sorted((EXAMPLES / "docs").iterdir()), wait=True, timeout_s=120))
        assert all(ev["stage"] in ("indexed", "unchanged") for ev in results.values()), results
        yield stack
    finally:
        stack.stop()
    assert not stack.errors()


@pytest.fixture(scope="module")
def prometheus(box, tmp_path_factory):
    """A real Prometheus, configured from ops/prometheus.yml with this box's ports, scraping every second."""
    if not shutil.which("prometheus"):
        pytest.fail("prometheus is not installed: `make test-tools` installs it (Debian package prometheus)")
    work = tmp_path_factory.mktemp("prometheus")
    config = (OPS / "prometheus.yml").read_text()
    for name in SERVICES:
        config = config.replace(f"127.0.0.1:{service_port(9810, name)}", f"127.0.0.1:{service_port(box.metrics_port, name)}")
    config = config.replace("scrape_interval: 15s", "scrape_interval: 1s").replace("evaluation_interval: 15s", "evaluation_interval: 1s")
    config = config.replace("  - lineside-alerts.yml", f"  - {OPS / 'lineside-alerts.yml'}")
    (work / "prometheus.yml").write_text(config)
    port = broker_mod.free_port()
    log = (work / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _get(f"{url}/-/ready", 1)
                break
            except OSError:
                assert proc.poll() is None, (work / "prometheus.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "prometheus did not get ready in 30 s"
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _endpoint(box, name: str) -> str:
    return f"http://127.0.0.1:{service_port(box.metrics_port, name)}/metrics"


def _wait_for(prom: str, query: str, check, timeout_s: float = 30.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        result = _promql(prom, query)
        if check(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def test_prometheus_counts_the_questions_asked_by_status(box, prometheus):
    answers = [asyncio.run(ask(box.conn, q, device="hmi-wl2", timeout_s=60)) for q in QUESTIONS]
    assert [a["status"] for a in answers] == ["answered", "answered", "fallback"]

    total = _wait_for(prometheus, "sum(lineside_questions_total)", lambda r: r and float(r[0]["value"][1]) == 3)
    assert float(total[0]["value"][1]) == 3
    by_status = _promql(prometheus, "sum by (status, reason) (lineside_questions_total)")
    counts = {(r["metric"]["status"], r["metric"].get("reason", "")): float(r["value"][1]) for r in by_status}
    assert counts == {("answered", ""): 2, ("fallback", answers[2]["reason"]): 1}
    # The answer-time histogram counted them too, and every service is scraped (up == 1).
    observed = _promql(prometheus, 'sum(lineside_answer_seconds_count{status="answered"})')
    assert float(observed[0]["value"][1]) == 2
    up = _wait_for(prometheus, 'up{job="lineside"}', lambda r: len(r) == len(SERVICES))
    assert {r["metric"]["service"]: r["value"][1] for r in up} == dict.fromkeys(SERVICES, "1")
    # Each service is scraped on its own schedule: the retriever's last search may be in its next scrape.
    searches = _wait_for(prometheus, "sum(lineside_retrieval_seconds_count)", lambda r: r and float(r[0]["value"][1]) >= 3)
    assert float(searches[0]["value"][1]) >= 3
    # The model wrote the two answers: time to first token, generation time and tokens.
    for query in ("sum(lineside_llm_ttft_seconds_count)", "sum(lineside_llm_generation_seconds_count)"):
        result = _wait_for(prometheus, query, lambda r: r and float(r[0]["value"][1]) == 2)
        assert float(result[0]["value"][1]) == 2, query
    assert float(_promql(prometheus, "sum(lineside_llm_generated_tokens_total)")[0]["value"][1]) > 0
    ttft = _promql(prometheus, "histogram_quantile(0.5, sum by (le) (lineside_llm_ttft_seconds_bucket))")
    assert 0 < float(ttft[0]["value"][1]) < 30


def test_broker_figures_and_index_size_reach_prometheus(box, prometheus):
    # Mosquitto publishes $SYS every 10 s; the gateway exports what it read.
    clients = _wait_for(prometheus, "lineside_broker_clients_connected", lambda r: r and float(r[0]["value"][1]) >= 4, timeout_s=25)
    assert clients, "no $SYS figures from the broker"
    assert float(clients[0]["value"][1]) >= 4  # the four services at least
    docs = _promql(prometheus, "lineside_index_documents")
    assert float(docs[0]["value"][1]) == len(list((EXAMPLES / "docs").iterdir()))
    size = _promql(prometheus, "lineside_index_size_bytes")
    assert float(size[0]["value"][1]) > 0
    rss = _promql(prometheus, 'process_resident_memory_bytes{job="lineside"}')
    assert {r["metric"]["service"] for r in rss} == set(SERVICES)


def test_every_endpoint_passes_promtool_and_carries_no_question_text(box):
    asyncio.run(ask(box.conn, QUESTIONS[0], device="hmi-wl2", timeout_s=60))
    words = {w.casefold() for q in QUESTIONS for w in re.findall(r"[A-Za-z]{5,}", q)}
    for name in SERVICES:
        text = _get(_endpoint(box, name))
        out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, f"{name}: {out.stdout}{out.stderr}"
        assert "lineside_build_info{" in text
        labels = " ".join(re.findall(r"\{([^}]*)\}", text)).casefold()
        assert not [w for w in words if w in labels], f"{name} puts question words in labels"


def test_alert_rules_and_the_scrape_config_pass_promtool_and_the_rules_their_unit_tests():
    for args in (
        ["check", "rules", "lineside-alerts.yml"],
        ["test", "rules", "lineside-alerts.test.yml"],
        ["check", "config", "prometheus.yml"],
    ):
        out = subprocess.run(["promtool", *args], cwd=OPS, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr


def test_prometheus_loaded_the_rules_and_the_dashboard_uses_only_exported_metrics(box, prometheus):
    rules = json.loads(_get(f"{prometheus}/api/v1/rules"))["data"]["groups"]
    names = {r["name"] for g in rules for r in g["rules"]}
    assert {"LinesideServiceDown", "LinesideAnswersSlow", "LinesideFallbackShareHigh", "LinesideDataDiskNearlyFull"} <= names
    assert "LinesideLlmRestarting" in names
    assert all(r["health"] == "ok" for g in rules for r in g["rules"] if r.get("health") != "unknown")

    exported = set()
    for name in SERVICES:
        exported |= set(re.findall(r"^([a-z_:][a-z0-9_:]*)", _get(_endpoint(box, name)), re.MULTILINE))
    dashboard = json.loads((OPS / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += re.findall(r"expr: \|?\s*(.+?)\n\s+(?:for|labels):", (OPS / "lineside-alerts.yml").read_text(), re.DOTALL)
    used = {m for e in exprs for m in re.findall(r"\b((?:lineside|process)_[a-z0-9_]+)", e)}
    assert used, "no metric names found in the dashboard"
    assert not used - exported, f"the dashboard or the rules use metrics no service exports: {sorted(used - exported)}"
    # Grafana imports it as is: a datasource variable, every panel on it, unique ids.
    assert dashboard["templating"]["list"][0]["type"] == "datasource"
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"])
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_lineside_up_documents_the_default_metrics_ports():
    assert service_port(9810, "gateway") == 9810
    assert service_port(9810, "ingest") == 9813
    assert service_port(9810, "llm-2") == 9814
    assert "9810" in (ROOT / "docs" / "operations.md").read_text()
    assert "9810" in Path(ROOT / "ops" / "prometheus.yml").read_text()


def test_status_shows_services_models_knowledge_base_and_todays_questions(box):
    asyncio.run(ask(box.conn, QUESTIONS[2], device="hmi-wl2", timeout_s=60))  # at least one of each, whatever ran before
    model = asyncio.run(ask(box.conn, QUESTIONS[0], device="hmi-wl2", timeout_s=60))["model"]
    argv = ["status", "--json", "--port", str(box.conn.mqtt_port), "--data", str(box.data), "--metrics-port", str(box.metrics_port)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(argv) == 0
    status = json.loads(out.getvalue())
    services = {s["name"]: s for s in status["services"]}
    assert {n: s["state"] for n, s in services.items()} == dict.fromkeys(SERVICES, "online")
    assert services["llm"]["model"] == model
    assert services["retriever"]["model"].startswith("use-multilingual")
    assert all(s["version"] and s["memory_mb"] > 0 for s in services.values())
    assert status["documents"] == len(list((EXAMPLES / "docs").iterdir()))
    assert status["chunks"] > status["documents"]
    today = status["today"]
    assert today["by_status"]["answered"] >= 1
    assert today["by_status"]["fallback"] >= 1
    assert 0 < today["p50_ms"] <= today["p95_ms"]
    assert status["errors"] == []

    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        assert cli.main([a for a in argv if a != "--json"]) == 0
    assert f"knowledge base: {status['documents']} documents" in text.getvalue()
    assert "answer time today: p50" in text.getvalue()
