"""examples/node-red/flows.json, imported as it is into a real Node-RED (the version the Makefile
pins), asks a secured box over TLS: MQTT 5 with Correlation Data and a streamed answer, MQTT 3.1.1
with a request_id, and each status shown as an operator screen shows it. The flow's HTTP endpoint
(a SCADA calling Node-RED) is how the test asks and reads what the screen would show."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lineside import broker as broker_mod
from tests.conftest import EXAMPLES, ROOT
from tests.e2e.wiring import ANSWERABLE, OUT_OF_SCOPE, add_device, export_ca, run_cli, start_box

pytestmark = pytest.mark.e2e

FLOW = EXAMPLES / "node-red" / "flows.json"
VERSION = re.search(r"^NODE_RED := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
NODE_RED = Path.home() / ".cache" / "lineside" / f"node-red-{VERSION.group(1) if VERSION else '?'}" / "node_modules" / "node-red" / "red.js"
DEVICE_5, DEVICE_311 = "nr-wl2", "nr-wl2-v311"

SETTINGS = """module.exports = {
    uiHost: "127.0.0.1",
    uiPort: %d,
    flowFile: "flows.json",
    credentialSecret: false,
    httpAdminRoot: false,
    mqttReconnectTime: 1000,
    logging: {console: {level: "info", metrics: false, audit: false}},
};
"""


@pytest.fixture(scope="module")
def node_red(tmp_path_factory):
    """A secured box, two device accounts, and Node-RED running the example flow against it."""
    if shutil.which("node") is None or not NODE_RED.is_file():
        pytest.skip(f"Node-RED is not installed at {NODE_RED.parents[2]}: `make node-red` could not reach npm or its registry")
    box = start_box(
        tmp_path_factory.mktemp("node-red-box"),
        env={"LINESIDE_GATEWAY_RATE_BURST": "6", "LINESIDE_GATEWAY_RATE_PER_MINUTE": "6", "LINESIDE_GATEWAY_WORKER_DEADLINE_S": "3"},
    )
    user_dir = tmp_path_factory.mktemp("node-red")
    proc = None
    log = (user_dir / "node-red.log").open("w")
    try:
        ca = export_ca(box, user_dir / "ca")
        # What the editor stores after the engineer types each device's name and password into its
        # broker node (plain here: credentialSecret false).
        creds = {
            "lineside.broker.mqtt5": {"user": DEVICE_5, "password": add_device(box, DEVICE_5)},
            "lineside.broker.mqtt311": {"user": DEVICE_311, "password": add_device(box, DEVICE_311)},
        }
        shutil.copyfile(FLOW, user_dir / "flows.json")
        (user_dir / "flows_cred.json").write_text(json.dumps(creds))
        port = broker_mod.free_port()
        (user_dir / "settings.js").write_text(SETTINGS % port)
        env = {
            **os.environ,
            "LINESIDE_HOST": "127.0.0.1",
            "LINESIDE_PORT": str(box.tls_port),
            "LINESIDE_CA_FILE": str(ca),
            "LINESIDE_DEVICE_V5": DEVICE_5,
            "LINESIDE_DEVICE_V311": DEVICE_311,
            "LINESIDE_TIMEOUT_S": "30",
        }
        proc = subprocess.Popen(
            ["node", str(NODE_RED), "--settings", str(user_dir / "settings.js"), "--userDir", str(user_dir)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 45
        health: dict = {}
        while time.monotonic() < deadline and health != {"mqtt5": True, "mqtt311": True}:
            time.sleep(0.3)
            assert proc.poll() is None, (user_dir / "node-red.log").read_text()
            try:
                health = json.loads(urllib.request.urlopen(f"{url}/lineside/health", timeout=2).read())  # noqa: S310 - the test's own http://127.0.0.1
            except (OSError, ValueError):
                continue
        assert health == {"mqtt5": True, "mqtt311": True}, f"{health}\n{(user_dir / 'node-red.log').read_text()}"
        yield box, url
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        log.close()
        box.stop()


def _post(url: str, path: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - the test's own http://127.0.0.1
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_mqtt5_question_is_answered_and_streamed_in_order(node_red):
    _, url = node_red
    code, screen = _post(url, "/lineside/ask", {"question": ANSWERABLE})
    assert code == 200, screen
    assert screen["status"] == "answered", screen
    assert screen["severity"] == "ok"
    assert "2000 kN" in screen["answer"]["answer"]
    first = screen["answer"]["sources"][0]
    assert f"({first['doc']}, {first['locator']})" in screen["display"]
    # The pieces arrived on <Response Topic>/stream with the question's Correlation Data, in order.
    assert screen["stream_seq"] == list(range(len(screen["stream_seq"])))
    assert len(screen["stream_seq"]) >= 2
    assert screen["stream_final"] is True
    assert "2000 kN" in screen["streamed"]
    # The flat field for a 40-80 character HMI string tag.
    assert 0 < len(screen["answer"]["answer_short"]) <= 80


def test_mqtt311_question_is_matched_by_its_request_id(node_red):
    _, url = node_red
    code, screen = _post(url, "/lineside/ask311", {"question": ANSWERABLE, "stream": True})
    assert code == 200, screen
    assert screen["status"] == "answered", screen
    assert screen["answer"]["request_id"].startswith("nr311-")
    assert "2000 kN" in screen["answer"]["answer"]
    assert screen["stream_final"] is True
    assert "2000 kN" in screen["streamed"]


def test_fallback_is_shown_with_what_to_do(node_red):
    _, url = node_red
    code, screen = _post(url, "/lineside/ask311", {"question": OUT_OF_SCOPE})
    assert code == 200, screen
    assert screen["status"] == "fallback"
    assert screen["severity"] == "warn"
    assert screen["display"].startswith("Please contact technical support.")
    assert screen["answer"]["reason"] in ("not_covered", "nothing_found")


def test_rejection_reaches_the_question_that_caused_it(node_red):
    _, url = node_red
    for path in ("/lineside/ask", "/lineside/ask311"):
        code, screen = _post(url, path, {"question": "x" * 1001})
        # An answer at all (not the flow's 504) means the rejection carried the question's own
        # Correlation Data or request_id.
        assert code == 200, (path, screen)
        assert screen["status"] == "rejected"
        assert screen["answer"]["error"]["code"] == "question_too_long"
        assert screen["display"].startswith("Question not accepted: ")
        assert screen["severity"] == "fault"
        assert screen["retry"] is False


def test_busy_is_shown_as_retry_later(node_red):
    _, url = node_red
    with ThreadPoolExecutor(8) as pool:
        screens = list(pool.map(lambda i: _post(url, "/lineside/ask311", {"question": f"{OUT_OF_SCOPE} ({i})"}), range(8)))
    assert all(code == 200 for code, _ in screens), screens  # every question got its own answer
    busy = [s for _, s in screens if s["status"] == "busy"]
    assert busy, [s["status"] for _, s in screens]
    assert {s["answer"]["error"]["code"] for s in busy} == {"rate_limited"}
    assert all(s["retry"] is True and s["display"] == "Lineside is busy: ask again in a moment" for s in busy)


def test_error_is_shown_when_a_service_is_down(node_red):
    box, url = node_red
    box.stop_one("retriever")
    code, screen = _post(url, "/lineside/ask", {"question": ANSWERABLE})
    assert code == 200, screen
    assert screen["status"] == "error"
    assert screen["answer"]["error"]["code"] == "retriever_unavailable"
    assert screen["severity"] == "fault"
    assert screen["retry"] is True
    assert "retriever_unavailable" in screen["display"]


def test_a_question_while_the_broker_connection_is_down_is_refused_at_once(node_red):
    """Node-RED drops a publish made while disconnected, without an error; the flow says so instead."""
    box, url = node_red
    run_cli("device", "remove", DEVICE_311, "--data", str(box.data))  # the broker closes its connection
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        health = json.loads(urllib.request.urlopen(f"{url}/lineside/health", timeout=2).read())  # noqa: S310 - the test's own http://127.0.0.1
        if not health["mqtt311"]:
            break
        time.sleep(0.2)
    assert health == {"mqtt5": True, "mqtt311": False}
    t = time.monotonic()
    code, screen = _post(url, "/lineside/ask311", {"question": ANSWERABLE})
    assert code == 503
    assert time.monotonic() - t < 5
    assert screen["display"].startswith("Not connected to Lineside")
    assert screen["retry"] is True
