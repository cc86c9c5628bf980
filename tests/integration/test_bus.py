"""The MQTT bus against a real Mosquitto: request/response properties, status and Last Will, persistent sessions."""

import asyncio
import subprocess
import sys
import textwrap

import pytest

from lineside.bus import Bus, BusError
from lineside.settings import Connection
from schemas import topics


async def _next(bus: Bus, wait_s: float = 5.0):
    async def first():
        async for m in bus.messages():
            return m
        return None

    return await asyncio.wait_for(first(), wait_s)


def test_response_topic_correlation_and_content_type_travel(broker):
    async def go():
        async with Bus(broker, subscriptions=("t/req",)) as server, Bus(broker, subscriptions=("t/reply",)) as client:
            await client.publish("t/req", b"q", response_topic="t/reply", correlation_data=b"c-1", content_type="application/msgpack")
            m = await _next(server)
            assert (m.topic, m.payload, m.response_topic, m.correlation_data, m.content_type) == (
                "t/req",
                b"q",
                "t/reply",
                b"c-1",
                "application/msgpack",
            )
            await server.publish(m.response_topic, b"a", correlation_data=m.correlation_data)
            r = await _next(client)
            assert (r.payload, r.correlation_data) == (b"a", b"c-1")

    asyncio.run(go())


def test_status_online_then_offline_on_clean_exit(broker):
    async def go():
        async with Bus(broker, service="probe"):
            pass
        async with Bus(broker, subscriptions=(topics.status("probe"),)) as watcher:
            m = await _next(watcher)
            assert m.payload == b"offline"

    asyncio.run(go())


def test_last_will_says_offline_when_a_service_dies(broker):
    script = textwrap.dedent(f"""
        import asyncio, os
        from lineside.bus import Bus
        from lineside.settings import Connection
        async def main():
            async with Bus(Connection(mqtt_port={broker.mqtt_port}), service="crashy"):
                print("up", flush=True)
                os._exit(3)
        asyncio.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 3
    assert "up" in out.stdout

    async def go():
        async with Bus(broker, subscriptions=(topics.status("crashy"),)) as watcher:
            m = await _next(watcher, 10)
            assert m.payload == b"offline"

    asyncio.run(go())


def test_persistent_session_receives_what_was_queued_while_offline(broker):
    async def go():
        async with Bus(broker, client_id="svc-a", subscriptions=("work/q",), persistent=True):
            pass  # registers the session and its subscription
        async with Bus(broker) as producer:
            await producer.publish("work/q", b"job-1")
        async with Bus(broker, client_id="svc-a", subscriptions=("work/q",), persistent=True) as again:
            m = await _next(again)
            assert m.payload == b"job-1"

    asyncio.run(go())


def test_unreachable_broker_says_which_variables_to_set():
    async def go():
        async with Bus(Connection(mqtt_host="127.0.0.1", mqtt_port=1)):
            pass

    with pytest.raises(BusError, match="LINESIDE_MQTT_PORT"):
        asyncio.run(go())


def test_broker_port_taken_is_reported(broker, tmp_path):
    from lineside import broker as broker_mod
    from lineside.errors import BrokerError

    with pytest.raises(BrokerError, match="LINESIDE_MQTT_PORT"):
        broker_mod.start(broker.mqtt_port, tmp_path / "second")
