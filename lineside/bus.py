"""The one module that owns the MQTT client (aiomqtt over paho-mqtt).

Everything else publishes and consumes through ``Bus`` and never imports aiomqtt
or paho, so upgrading the client touches this file only.
"""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import aiomqtt
import msgspec
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from lineside.errors import BrokerError
from lineside.settings import Connection
from schemas import topics

QOS = 1
"""At-least-once for questions, answers and internal traffic: nothing is lost on a reconnect,
and every consumer tolerates a duplicate (replies are matched by request id)."""

SESSION_EXPIRY_S = 24 * 3600
"""A persistent service session survives a day offline: questions and chunks queued for a
stopped service are delivered when it comes back (broker-side memory is bounded by
max_queued_messages in brokers/)."""

KEEPALIVE_S = 30
"""Half a minute: a dead service's Last Will (status offline) fires within ~45 s."""

OFFLINE_PUBLISH_TIMEOUT_S = 2.0
"""On shutdown, give the retained 'offline' at most this long before disconnecting anyway."""

_NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
"""Without TCP_NODELAY, Nagle + delayed ACK add ~40 ms stalls to small request/reply round trips."""


class BusError(BrokerError):
    """The connection to the broker failed or was lost."""


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message as the services see it: no client-library types leak out."""

    topic: str
    payload: bytes
    response_topic: str | None = None
    correlation_data: bytes | None = None
    content_type: str | None = None
    message_expiry_s: int | None = None
    received_at: float = 0.0
    mid: int = 0
    """The packet id the broker delivered it with (what a manual-ack bus acknowledges)."""
    qos: int = 0


def _prop(props: Any, name: str) -> Any:
    return getattr(props, name, None) if props is not None else None


class Bus:
    """An MQTT 5 connection with a Last Will, retained status, and typed inbound messages."""

    def __init__(
        self,
        conn: Connection,
        *,
        client_id: str | None = None,
        service: str | None = None,
        subscriptions: Sequence[str] = (),
        persistent: bool = False,
        max_queued_incoming: int = 0,
        manual_ack: bool = False,
        session_expiry_s: int = SESSION_EXPIRY_S,
    ) -> None:
        """``session_expiry_s``: how long a ``persistent`` session outlives its connection.

        ``manual_ack``: a QoS 1 message is acknowledged when its consumer asks ``messages()`` for
        the next one, that is once it has handled it (made it safe); a consumer that dies first
        never acknowledges it, and the broker delivers it again on the next connection."""
        self.client_id = client_id or f"lineside-cli-{uuid.uuid4().hex[:12]}"
        self.service = service
        self._subscriptions = tuple(subscriptions)
        will = None
        if service:
            will = aiomqtt.Will(topics.status(service), b"offline", qos=QOS, retain=True)
        connect_props = None
        if persistent:
            connect_props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            connect_props.SessionExpiryInterval = session_expiry_s
        self._conn = conn
        tls = ssl.create_default_context(cafile=conn.mqtt_ca_file) if conn.mqtt_tls else None
        self._client = aiomqtt.Client(
            conn.mqtt_host,
            conn.mqtt_port,
            username=conn.mqtt_username,
            password=conn.mqtt_password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=will,
            clean_start=not persistent,
            keepalive=KEEPALIVE_S,
            properties=connect_props,
            socket_options=[_NODELAY],
            max_queued_incoming_messages=max_queued_incoming or None,
            tls_context=tls,
        )
        self.manual_ack = manual_ack
        if manual_ack:
            # aiomqtt 2 has no manual-ack option; paho 2 has, on the client aiomqtt wraps.
            self._client._client.manual_ack_set(True)

    async def __aenter__(self) -> Bus:
        try:
            await self._client.__aenter__()
        except aiomqtt.MqttError as exc:
            hint = "(set LINESIDE_MQTT_HOST / LINESIDE_MQTT_PORT, or start it with `lineside up`)"
            if "authori" in str(exc).lower() or "password" in str(exc).lower():
                hint = "(check LINESIDE_MQTT_USERNAME and LINESIDE_MQTT_PASSWORD / LINESIDE_MQTT_PASSWORD_FILE)"
            raise BusError(f"cannot connect to the MQTT broker at {self._conn.mqtt_host}:{self._conn.mqtt_port}: {exc} {hint}") from exc
        try:
            for flt in self._subscriptions:
                # The broker's own $SYS figures are worthless late: at QoS 0 a persistent session does
                # not queue them while the service is offline (at QoS 1 a day offline would fill its queue).
                await self._client.subscribe(flt, qos=0 if flt.startswith("$SYS/") else QOS)
            if self.service:
                await self._client.publish(topics.status(self.service), b"online", qos=QOS, retain=True)
        except aiomqtt.MqttError as exc:
            await self._client.__aexit__(None, None, None)
            raise BusError(f"broker refused set-up for {self.client_id}: {exc}") from exc
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.service:
            try:
                await asyncio.wait_for(
                    self._client.publish(topics.status(self.service), b"offline", qos=QOS, retain=True),
                    OFFLINE_PUBLISH_TIMEOUT_S,
                )
            except (aiomqtt.MqttError, TimeoutError, asyncio.CancelledError):
                pass  # the Last Will says offline for us
        try:
            await self._client.__aexit__(exc_type, exc, tb)
        except aiomqtt.MqttError:
            pass

    async def subscribe(self, topic_filter: str) -> None:
        """Subscribe to one more topic filter at QoS 1."""
        try:
            await self._client.subscribe(topic_filter, qos=QOS)
        except aiomqtt.MqttError as exc:
            raise BusError(f"subscribe {topic_filter} failed: {exc}") from exc

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        content_type: str | None = None,
        message_expiry_s: int | None = None,
    ) -> None:
        """Publish at QoS 1 with optional MQTT 5 request/response properties."""
        props = None
        if response_topic or correlation_data or content_type or message_expiry_s:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if response_topic:
                props.ResponseTopic = response_topic
            if correlation_data:
                props.CorrelationData = correlation_data
            if content_type:
                props.ContentType = content_type
            if message_expiry_s:
                props.MessageExpiryInterval = message_expiry_s
        try:
            await self._client.publish(topic, payload, qos=QOS, retain=retain, properties=props)
        except aiomqtt.MqttError as exc:
            raise BusError(f"publish to {topic} failed: {exc}") from exc

    async def messages(self) -> AsyncIterator[Inbound]:
        """Inbound messages, converted; raises BusError when the connection is lost. On a manual-ack
        bus each is acknowledged when the consumer comes back for the next."""
        try:
            async for m in self._client.messages:
                payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                props = m.properties
                yield Inbound(
                    topic=m.topic.value,
                    payload=payload,
                    response_topic=_prop(props, "ResponseTopic"),
                    correlation_data=_prop(props, "CorrelationData"),
                    content_type=_prop(props, "ContentType"),
                    message_expiry_s=_prop(props, "MessageExpiryInterval"),
                    received_at=time.monotonic(),
                    mid=m.mid,
                    qos=m.qos,
                )
                if self.manual_ack and m.qos == 1 and m.mid:
                    self._client._client.ack(m.mid, m.qos)  # handled: the broker may forget it now
        except aiomqtt.MqttError as exc:
            raise BusError(f"connection to the broker lost: {exc}") from exc


async def run_forever(
    make_bus: Callable[[], Bus],
    consume: Callable[[Bus], Awaitable[None]],
    on_error: Callable[[str, float], None],
    *,
    first_delay_s: float = 0.5,
    max_delay_s: float = 30.0,
) -> None:
    """Connect, consume, and on a lost connection reconnect with jittered exponential backoff.

    Backoff starts at 0.5 s (a restarted local broker is back within a second) and caps at
    30 s so a fleet of boxes does not hammer a broker that is down for maintenance.
    """
    delay = first_delay_s
    while True:
        try:
            async with make_bus() as bus:
                delay = first_delay_s
                await consume(bus)
                return
        except* BusError as group:
            wait = random.uniform(delay / 2, delay)
            on_error(str(group.exceptions[0]), wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, max_delay_s)


R = TypeVar("R")


class _Correlated(msgspec.Struct):
    """Just the request id of a reply (every internal reply carries one; other fields ignored)."""

    request_id: str = ""


def _retrieved(fut: asyncio.Future[Any]) -> None:
    """Mark a failed future's exception as seen: one set by ``Replies.fail`` just as its waiter was
    cancelled (a lost connection) would otherwise be reported as 'never retrieved'."""
    if fut.done() and not fut.cancelled():
        fut.exception()


class Replies:
    """Request/reply over one bus: a table of requests waiting for their reply, and a timeout.
    Every request/reply exchange of Lineside goes through it.

    Internal requests (``request``) are typed messages answered on the bus's reply inbox and
    matched by request id. A device's question (``exchange``) is answered the MQTT 5 way, on its
    Response Topic, and matched by Correlation Data. A service whose dispatcher already reads
    ``bus.messages()`` hands each message to ``deliver``; a tool with no dispatcher runs ``pump``.
    """

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.inbox = topics.reply_inbox(bus.client_id)
        self._pending: dict[str | bytes, tuple[asyncio.Future[Any], type[Any]]] = {}

    async def request(self, topic: str, message: msgspec.Struct, reply_type: type[R], timeout_s: float, *, key: str | None = None) -> R:
        """Publish ``message`` (MessagePack; its ``reply_to`` should be ``self.inbox``) and wait for
        the ``reply_type`` with the same request id; TimeoutError after ``timeout_s``."""
        rid = key if key is not None else str(getattr(message, "request_id", ""))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = (fut, reply_type)
        try:
            await self.bus.publish(topic, msgspec.msgpack.encode(message))
            result: R = await asyncio.wait_for(fut, timeout_s)
            return result
        finally:
            self._pending.pop(rid, None)
            _retrieved(fut)

    async def exchange(self, topic: str, payload: bytes, correlation: bytes, timeout_s: float, **props: Any) -> Inbound:
        """Publish ``payload`` with ``correlation`` as its Correlation Data (and ``props``: Response
        Topic, Content Type) and wait for the message that carries the same Correlation Data."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[correlation] = (fut, Inbound)
        try:
            await self.bus.publish(topic, payload, correlation_data=correlation, **props)
            reply: Inbound = await asyncio.wait_for(fut, timeout_s)
            return reply
        finally:
            self._pending.pop(correlation, None)
            _retrieved(fut)

    def waiting(self, rid: str) -> bool:
        """True while a request with this id waits for its reply."""
        return rid in self._pending

    def fail(self, rid: str, exc: BaseException) -> None:
        """End a waiting request with ``exc`` (its worker went away)."""
        entry = self._pending.get(rid)
        if entry is not None and not entry[0].done():
            entry[0].set_exception(exc)

    def deliver(self, m: Inbound) -> bool:
        """Complete the request ``m`` replies to; False when ``m`` is not such a reply (another
        message on the inbox, such as a stream piece, or a reply nobody waits for any more).
        Raises msgspec errors for a payload that is not MessagePack."""
        if m.correlation_data is not None:
            entry = self._pending.get(m.correlation_data)
            if entry is not None and entry[1] is Inbound and not entry[0].done():
                entry[0].set_result(m)
                return True
        if m.topic != self.inbox:
            return False
        rid = msgspec.msgpack.decode(m.payload, type=_Correlated).request_id
        entry = self._pending.get(rid)
        if entry is None or entry[0].done():
            return False
        try:
            reply = msgspec.msgpack.decode(m.payload, type=entry[1])
        except msgspec.ValidationError:
            return False  # same request id, another message type (a stream piece)
        entry[0].set_result(reply)
        return True

    async def pump(self) -> None:
        """Read the bus and deliver replies until cancelled (for callers with no dispatcher)."""
        async for m in self.bus.messages():
            try:
                self.deliver(m)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # not ours to judge: a garbled message on a private inbox
