"""The wiring examples played against a secured box as the devices would send them: the PLC's
MQTT 3.1.1 packets byte for byte (examples/plc/README.md), the Ignition script's payloads and tag
mapping (examples/ignition/lineside_ask.py, with Ignition's `system` played by the test), and every
question in docs/integration.md."""

from __future__ import annotations

import importlib.util
import json
import queue
import re
import socket
import ssl
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.conftest import EXAMPLES, ROOT
from tests.e2e.wiring import ANSWERABLE, OUT_OF_SCOPE, add_device, export_ca, run_cli, start_box

pytestmark = pytest.mark.e2e

PLC_DOC = EXAMPLES / "plc" / "README.md"
IGNITION = EXAMPLES / "ignition" / "lineside_ask.py"
INTEGRATION_DOC = ROOT / "docs" / "integration.md"
PLC, EXAMPLE_PASSWORD = "plc-wl2", "EXAMPLE-plc-wl2-password-0000000"


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    stack = start_box(tmp_path_factory.mktemp("wiring"))
    try:
        yield stack, export_ca(stack, tmp_path_factory.mktemp("ca"))
    finally:
        stack.stop()
    assert not stack.errors()


# ------------------------------------------------------------------ the PLC's bytes


def _hex_blocks(text: str) -> dict[str, bytes]:
    """Each ```hex block of the PLC page: its `# NAME` line, and the bytes left of each line's note."""
    out = {}
    for block in re.findall(r"```hex\n(.*?)```", text, re.S):
        first, *lines = block.splitlines()
        out[first.lstrip("# ").strip()] = bytes.fromhex(" ".join(line.split("  ")[0] for line in lines))
    return out


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def _read_packet(sock: ssl.SSLSocket) -> tuple[int, bytes]:
    def exactly(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError(f"the broker closed the connection after {buf.hex(' ')}")
            buf += chunk
        return buf

    first = exactly(1)[0]
    length, shift = 0, 0
    while True:
        digit = exactly(1)[0]
        length += (digit & 0x7F) << shift
        shift += 7
        if not digit & 0x80:
            break
    return first, exactly(length)


def _tls(box, ca: Path) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(ca))
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", box.tls_port), timeout=30), server_hostname="127.0.0.1")
    return sock


def test_the_plc_page_bytes_are_mqtt_311_as_documented():
    """The hex on the page is what the MQTT 3.1.1 spec makes of the page's own values."""
    text = PLC_DOC.read_text(encoding="utf-8")
    packets = _hex_blocks(text)
    question = next(json.loads(b) for b in re.findall(r"```json\n(.*?)```", text, re.S) if "question" in b)
    payload = json.dumps(question, separators=(",", ":")).encode()
    assert packets["CONNECT"] == _packet(0x10, _utf8("MQTT") + bytes([4, 0xC2, 0, 60]) + _utf8(PLC) + _utf8(PLC) + _utf8(EXAMPLE_PASSWORD))
    assert packets["SUBSCRIBE"] == _packet(0x82, b"\x00\x01" + _utf8(f"lineside/v1/answer/{PLC}") + b"\x01")
    assert packets["PUBLISH"] == _packet(0x32, _utf8(f"lineside/v1/ask/{PLC}") + b"\x00\x02" + payload)
    assert packets["CONNACK (from the broker)"] == bytes.fromhex("20 02 00 00")
    assert _varint(1475) == bytes.fromhex("c3 0b")  # the page's worked remaining length
    assert len(EXAMPLE_PASSWORD) == 32  # as long as a real device password: the lengths on the page hold


def test_a_plc_sending_the_documented_bytes_gets_its_answer(box):
    stack, ca = box
    packets = _hex_blocks(PLC_DOC.read_text(encoding="utf-8"))
    password = add_device(stack, PLC)
    assert len(password) == len(EXAMPLE_PASSWORD)
    with _tls(stack, ca) as sock:
        sock.sendall(packets["CONNECT"].replace(EXAMPLE_PASSWORD.encode(), password.encode()))
        first, body = _read_packet(sock)
        assert bytes([first]) + _varint(len(body)) + body == packets["CONNACK (from the broker)"]
        sock.sendall(packets["SUBSCRIBE"])
        first, body = _read_packet(sock)
        assert bytes([first, len(body)]) + body == packets["SUBACK (from the broker)"]
        sock.sendall(packets["PUBLISH"])
        puback, answer = None, None
        while puback is None or answer is None:
            first, body = _read_packet(sock)
            if first >> 4 == 4:
                puback = bytes([first, len(body)]) + body
            elif first >> 4 == 3:
                assert (first >> 1) & 3 == 1  # delivered at QoS 1: the PLC acknowledges it
                topic_len = int.from_bytes(body[:2], "big")
                topic, packet_id = body[2 : 2 + topic_len].decode(), body[2 + topic_len : 4 + topic_len]
                assert topic == f"lineside/v1/answer/{PLC}"
                sock.sendall(b"\x40\x02" + packet_id)
                answer = json.loads(body[4 + topic_len :])
        assert puback == packets["PUBACK (from the broker)"]
        sock.sendall(bytes.fromhex("c0 00"))  # PINGREQ
        assert _read_packet(sock) == (0xD0, b"")  # PINGRESP
        sock.sendall(bytes.fromhex("e0 00"))  # DISCONNECT
    assert answer["request_id"] == 1207  # the PLC's integer, as it sent it
    assert answer["status"] == "answered", answer
    assert "2000 kN" in answer["answer"]
    assert 0 < len(answer["answer_short"]) <= 80


def test_a_plc_with_a_wrong_password_reads_the_documented_connack(box):
    stack, ca = box
    packets = _hex_blocks(PLC_DOC.read_text(encoding="utf-8"))
    with _tls(stack, ca) as sock:
        sock.sendall(packets["CONNECT"])  # the page's example password is nobody's
        first, body = _read_packet(sock)
    assert bytes([first, len(body)]) + body == bytes.fromhex("20 02 00 05")


# ------------------------------------------------------------------ Ignition


class _Tags:
    """Ignition's system.tag: memory tags by path."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def readBlocking(self, paths: list[str]) -> list[SimpleNamespace]:
        return [SimpleNamespace(value=self.values.get(p)) for p in paths]

    def writeBlocking(self, paths: list[str], values: list[Any]) -> None:
        self.values.update(zip(paths, values, strict=True))


class _Engine:
    """Cirrus Link MQTT Engine's system.cirruslink.engine: records what the script publishes."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str, bytes, int, bool]] = []

    def publish(self, server: str, topic: str, payload: bytes, qos: int, retained: bool) -> None:
        self.published.append((server, topic, payload, qos, retained))


def _ignition() -> tuple[ModuleType, _Tags, _Engine]:
    spec = importlib.util.spec_from_file_location("lineside_ignition", IGNITION)
    assert spec is not None
    assert spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    tags, engine = _Tags(), _Engine()
    script.system = SimpleNamespace(tag=tags, cirruslink=SimpleNamespace(engine=engine))  # type: ignore[attr-defined]
    return script, tags, engine


class _Device:
    """An MQTT 3.1.1 connection as MQTT Engine makes it: TLS, the device's account, subscribed to its answers."""

    def __init__(self, box, ca: Path, name: str, password: str) -> None:
        self.answers: queue.Queue[tuple[str, bytes]] = queue.Queue()
        subscribed: queue.Queue[bool] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311)
        self.client.username_pw_set(name, password)
        self.client.tls_set(ca_certs=str(ca))
        self.client.on_message = lambda _c, _u, m: self.answers.put((m.topic, m.payload))
        self.client.on_subscribe = lambda *_: subscribed.put(True)
        self.client.on_connect = lambda c, *_: c.subscribe(f"lineside/v1/answer/{name}", qos=1)
        self.client.connect("127.0.0.1", box.tls_port)
        self.client.loop_start()
        subscribed.get(timeout=20)

    def play(self, topic: str, payload: bytes, qos: int, retained: bool) -> bytes:
        self.client.publish(topic, payload, qos=qos, retain=retained).wait_for_publish(20)
        _, answer = self.answers.get(timeout=60)
        return answer

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_ignition_script_maps_each_answer_to_its_tags(box):
    stack, ca = box
    script, tags, engine = _ignition()
    device = _Device(stack, ca, script.DEVICE, add_device(stack, script.DEVICE))
    root = script.TAG_ROOT
    try:
        for question, status in ((ANSWERABLE, "answered"), (OUT_OF_SCOPE, "fallback"), ("x" * 1001, "rejected")):
            request_id = script.ask(question)
            server, topic, payload, qos, retained = engine.published[-1]
            assert (server, topic, qos, retained) == (script.SERVER, f"lineside/v1/ask/{script.DEVICE}", 1, False)
            assert json.loads(payload)["request_id"] == request_id
            assert script.on_answer(device.play(topic, payload, qos, retained).decode("utf-8")) is True
            assert tags.values[root + "RequestId"] == request_id
            assert tags.values[root + "Status"] == status
            assert isinstance(tags.values[root + "LatencyMs"], float)
            assert isinstance(tags.values[root + "Cached"], bool)
            if status == "answered":
                assert "2000 kN" in tags.values[root + "Answer"]
                assert 0 < len(tags.values[root + "AnswerShort"]) <= 80
                assert tags.values[root + "SourceDoc"] == "PX-200_Press_Manual.pdf"
                assert tags.values[root + "Display"].endswith(f"({tags.values[root + 'SourceDoc']}, {tags.values[root + 'SourceLocator']})")
            elif status == "fallback":
                assert tags.values[root + "Display"] == "Please contact technical support."
                assert tags.values[root + "Reason"]
                assert tags.values[root + "SourceDoc"] == ""
            else:
                assert tags.values[root + "ErrorCode"] == "question_too_long"
                assert tags.values[root + "Display"].startswith("Question not accepted: ")
                assert tags.values[root + "Retry"] is False
        # An answer to an earlier question than the pending one leaves the tags alone.
        earlier = json.dumps({"request_id": f"{script.DEVICE}-1", "status": "answered", "answer": "stale", "sources": []})
        assert script.on_answer(earlier) is False
        assert tags.values[root + "Status"] == "rejected"
        assert script.on_answer("not json") is False
    finally:
        device.close()


# ------------------------------------------------------------------ docs/integration.md


def test_every_question_in_the_integration_guide_is_answered(box):
    """Each JSON question on the page, sent as a 3.1.1 device sends it, comes back with its own
    request_id (a number stays a number). The page's mosquitto_rr commands are run by
    tests/e2e/test_security.py::test_every_device_example_in_the_docs_is_answered_as_written."""
    stack, ca = box
    questions = [b for b in re.findall(r"```json\n(.*?)```", INTEGRATION_DOC.read_text(encoding="utf-8"), re.S) if '"question"' in b]
    assert len(questions) >= 2
    device = _Device(stack, ca, "hmi-guide", add_device(stack, "hmi-guide"))
    try:
        for raw in questions:
            sent = json.loads(raw)
            answer = json.loads(device.play("lineside/v1/ask/hmi-guide", raw.strip().encode(), 1, False))
            assert answer["request_id"] == sent["request_id"], raw
            assert answer["status"] in ("answered", "fallback"), (raw, answer)
    finally:
        device.close()


def test_the_guides_certificate_commands_work_as_written(box, tmp_path):
    stack, ca = box
    text = INTEGRATION_DOC.read_text(encoding="utf-8")
    commands = [
        line.split("#")[0].split()[1:]
        for block in re.findall(r"```sh\n(.*?)```", text, re.S)
        for line in block.splitlines()
        if line.startswith(".venv/bin/lineside ")
    ]
    assert [c[:2] for c in commands] == [["certs", "show"], ["certs", "export"]]
    shown = run_cli(*commands[0], "--data", str(stack.data))
    assert "127.0.0.1" in shown
    assert "fingerprint" in shown
    run_cli(*(str(tmp_path) if a == "/media/usb" else a for a in commands[1]), "--data", str(stack.data))
    assert (tmp_path / "lineside-ca.crt").read_bytes() == ca.read_bytes()
