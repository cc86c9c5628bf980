"""A secured box (brokers/secure.conf): devices log in over TLS, see only their own answers and
line, are rate-limited, and a removed device is refused at once."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import shlex
import subprocess

import msgspec
import pytest

from lineside import cli
from lineside.bus import Bus, BusError
from lineside.client import Asker
from lineside.security import layout
from lineside.settings import Connection
from schemas import topics
from tests.conftest import EXAMPLES, ROOT, start_stack

pytestmark = pytest.mark.e2e

OUT_OF_SCOPE = "What is on the canteen lunch menu on Friday?"
ANSWERABLE = "What is the nominal press force of the PX-200 press?"


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    stack = start_stack(
        tmp_path_factory.mktemp("secure"),
        sorted((EXAMPLES / "docs").iterdir()),
        env={"LINESIDE_GATEWAY_RATE_BURST": "4", "LINESIDE_GATEWAY_RATE_PER_MINUTE": "6"},
        secure=True,
    )
    try:
        yield stack
    finally:
        stack.stop()
    assert not stack.errors()


def _cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(list(argv)) == 0
    return out.getvalue()


def _add(box, name: str, *extra: str) -> Connection:
    """`lineside device add` as an operator would run it; the device's TLS connection settings."""
    printed = _cli("device", "add", name, *extra, "--data", str(box.data))
    assert "reloaded" in printed
    password = next(line.split(": ", 1)[1] for line in printed.splitlines() if line.startswith("password"))
    return Connection(
        mqtt_host="127.0.0.1",
        mqtt_port=box.tls_port,
        mqtt_username=name,
        mqtt_password=password,
        mqtt_tls=True,
        mqtt_ca_file=str(layout.paths(box.data).certs / "ca.crt"),
        data_dir=str(box.data),
    )


def _ask(conn: Connection, device: str, *questions: dict) -> list[dict]:
    async def go() -> list[dict]:
        async with Asker(conn, device=device, own_topic=True) as asker:
            return await asyncio.gather(*(asker.ask(q, timeout_s=120) for q in questions))

    return asyncio.run(go())


def test_registered_device_is_answered_over_tls_and_kept_to_its_line(box):
    hmi = _add(box, "hmi-l1", "--line", "Line 1")
    [ans] = _ask(hmi, "hmi-l1", {"question": ANSWERABLE})
    assert ans["status"] == "answered"
    assert "2000 kN" in ans["answer"]
    [wider] = _ask(hmi, "hmi-l1", {"question": ANSWERABLE, "line": "Line 2", "request_id": "widen"})
    assert wider["status"] == "rejected"
    assert wider["error"]["code"] == "line_not_allowed"
    assert wider["request_id"] == "widen"
    listed = json.loads(_cli("device", "list", "--json", "--data", str(box.data)))
    assert {"name": "hmi-l1", "line": "Line 1", "can_ingest": False} in listed


def test_plain_mqtt_and_anonymous_and_wrong_password_are_refused(box):
    hmi = _add(box, "hmi-pw")
    for conn, refusal in (
        # Plain MQTT to the TLS port: the broker closes the connection without a CONNACK.
        (msgspec.structs.replace(hmi, mqtt_tls=False), (BusError, TimeoutError)),
        (msgspec.structs.replace(hmi, mqtt_password="wrong"), BusError),  # noqa: S106 - a deliberately wrong password
        (msgspec.structs.replace(hmi, mqtt_username=None, mqtt_password=None), BusError),
        (Connection(mqtt_host="127.0.0.1", mqtt_port=box.conn.mqtt_port, data_dir=str(box.data)), BusError),  # anonymous, local port
    ):

        async def connect(c: Connection = conn) -> None:
            async with Bus(c):
                pass

        with pytest.raises(refusal):
            asyncio.run(asyncio.wait_for(connect(), 5))

    async def connect_ok() -> None:
        async with Bus(hmi):
            pass

    asyncio.run(asyncio.wait_for(connect_ok(), 10))  # and the right password over TLS gets in


def test_a_device_cannot_have_answers_sent_into_another_devices_topics(box):
    hmi = _add(box, "hmi-x")

    async def go() -> tuple[str, bytes]:
        async with Bus(hmi, subscriptions=(topics.answer_device("hmi-x"),)) as bus:
            await bus.publish(
                topics.ask_device("hmi-x"),
                json.dumps({"question": ANSWERABLE, "request_id": "redirect"}).encode(),
                response_topic=f"{topics.answer_device('plc-7')}/x",
            )
            async for m in bus.messages():
                return m.topic, m.payload
        raise AssertionError("no reply")

    topic, reply = asyncio.run(asyncio.wait_for(go(), 30))
    assert topic == topics.answer_device("hmi-x")  # the refusal comes back to the asker
    ans = json.loads(reply)
    assert ans["status"] == "rejected"
    assert ans["error"]["code"] == "reply_topic_not_allowed"
    assert ans["request_id"] == "redirect"


def test_a_flooding_device_gets_busy_and_another_device_is_still_answered(box):
    flood = _add(box, "hmi-flood")
    calm = _add(box, "hmi-calm")
    answers = _ask(flood, "hmi-flood", *({"question": OUT_OF_SCOPE, "request_id": f"f{i}"} for i in range(12)))
    statuses = [a["status"] for a in answers]
    assert statuses.count("fallback") == 4  # the burst
    limited = [a for a in answers if a["status"] == "busy"]
    assert len(limited) == 8
    assert {a["error"]["code"] for a in limited} == {"rate_limited"}
    assert {a["request_id"] for a in limited} <= {f"f{i}" for i in range(12)}
    [ok] = _ask(calm, "hmi-calm", {"question": ANSWERABLE})
    assert ok["status"] == "answered"


def test_a_removed_device_is_refused_at_once(box):
    gone = _add(box, "hmi-gone")
    [ans] = _ask(gone, "hmi-gone", {"question": OUT_OF_SCOPE})
    assert ans["status"] == "fallback"
    assert "removed" in _cli("device", "remove", "hmi-gone", "--data", str(box.data))

    async def connect() -> None:
        async with Bus(gone):
            pass

    with pytest.raises(BusError):
        asyncio.run(asyncio.wait_for(connect(), 10))
    assert "hmi-gone" not in _cli("device", "list", "--data", str(box.data))


def _doc_commands(tool: str) -> list[tuple[str, str]]:
    """Every ``tool`` command in the README's and docs' shell examples, line continuations joined: (file, command)."""
    out = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```(?:sh|bash|shell)?\n(.*?)```", path.read_text(encoding="utf-8"), re.S):
            for cmd in block.replace("\\\n", " ").splitlines():
                if cmd.strip().startswith(tool):
                    out.append((path.name, cmd.strip()))
    return out


def test_every_device_example_in_the_docs_is_answered_as_written(box):
    """A controls engineer copies an example: with the box's address, port, CA and the device's
    password filled in, it must get an answer, not silence (docs that rot are worse than none)."""
    commands = _doc_commands("mosquitto_rr")
    assert len(commands) >= 3, commands  # README and the device contract both show MQTT 5 and 3.1.1
    passwords: dict[str, str] = {}
    ca = str(layout.paths(box.data).certs / "ca.crt")
    for source, cmd in commands:
        argv = shlex.split(cmd)
        user = argv[argv.index("-u") + 1]
        if user not in passwords:
            passwords[user] = _add(box, user).mqtt_password or ""
        host = argv[argv.index("-h") + 1]
        filled = [
            "127.0.0.1"
            if a == host
            else str(box.tls_port)
            if a == "8883"
            else ca
            if a == "ca.crt"
            else passwords[user]
            if a == "<password>"
            else a
            for a in argv
        ]
        done = subprocess.run([*filled, "-W", "120"], capture_output=True, text=True, timeout=150, check=False)
        assert done.returncode == 0, f"{source}: {cmd}\n{done.stderr}"
        answer = json.loads(done.stdout.splitlines()[-1])
        assert answer["status"] in ("answered", "fallback"), f"{source}: {cmd}\n{answer}"
