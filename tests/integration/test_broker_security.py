"""The secure broker profile against a real Mosquitto: logins, TLS, per-account ACLs and reload.

Devices connect to the TLS listener, services to the loopback listener, each with the password
lineside.security generated for it, through paho-mqtt directly (the bus hides the client ids and
reason codes these tests look at).
"""

import queue
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from lineside.broker import free_port
from lineside.security import accounts, acl, layout, registry, secure_broker
from schemas import topics

WAIT_S = 5.0
"""How long something that should arrive may take (it takes milliseconds)."""
QUIET_S = 1.0
"""How long a client is watched for something that must not arrive."""


@dataclass
class Box:
    """A running secure broker and the passwords of its accounts."""

    data: Path
    port: int
    local_port: int
    pid: int
    ca: Path
    passwords: dict[str, str]
    peers: list["Peer"] = field(default_factory=list)


class Peer:
    """One paho MQTT 5 client that records what the broker does to it."""

    def __init__(self, box, user, password=None, *, client_id=None, tls=True, port=None):
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, client_id=client_id or user or "")
        if user:
            self.client.username_pw_set(user, box.passwords[user] if password is None else password)
        if tls:
            # Verifies the chain up to the CA and that the certificate names the host, 127.0.0.1.
            self.client.tls_set(ca_certs=str(box.ca))
        self.port = port or (box.port if tls else box.local_port)
        self.connack = None
        self.dropped = False
        self.messages = queue.Queue()
        self.subacks = queue.Queue()
        self.pubacks = {}
        self.client.on_connect = lambda c, u, flags, rc, props: setattr(self, "connack", rc)
        self.client.on_disconnect = lambda c, u, flags, rc, props: setattr(self, "dropped", True)
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.client.on_subscribe = lambda c, u, mid, rcs, props: self.subacks.put(mid)
        self.client.on_publish = lambda c, u, mid, rc, props: self.pubacks.__setitem__(mid, rc)
        box.peers.append(self)

    def connect(self):
        """'accepted', the broker's refusal reason, or 'dropped' when it closed the connection unanswered."""
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        deadline = time.monotonic() + WAIT_S
        while self.connack is None and not self.dropped and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.connack is None or self.connack.is_failure:
            self.close()  # or paho would keep retrying
            return "dropped" if self.connack is None else str(self.connack)
        return "accepted"

    def subscribe(self, topic_filter):
        """Subscribe at QoS 1 and wait for the SUBACK (Mosquitto 2.0 grants it; the ACL applies at delivery)."""
        mid = self.client.subscribe(topic_filter, qos=1)[1]
        assert self.subacks.get(timeout=WAIT_S) == mid

    def publish(self, topic, payload):
        """Publish at QoS 1 and return the PUBACK reason ('Success', 'Not authorized', ...)."""
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(WAIT_S)
        return str(self.pubacks.get(info.mid))

    def received(self, count=1, timeout=WAIT_S):
        """The payloads of the next ``count`` messages (fewer if they do not come in time)."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            try:
                out.append(self.messages.get(timeout=max(0.0, deadline - time.monotonic()))[1])
            except queue.Empty:
                break
        return out

    def nothing(self):
        """True when no message arrives within QUIET_S."""
        return self.received(1, QUIET_S) == []

    def close(self):
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def box(tmp_path):
    """Mosquitto from brokers/secure.conf: TLS on one free port, plain loopback on another, devices hmi-a and hmi-b."""
    passwords = {"hmi-a": registry.add_device(tmp_path, "hmi-a"), "hmi-b": registry.add_device(tmp_path, "hmi-b")}
    port = free_port()
    local_port = free_port()
    while local_port == port:
        local_port = free_port()
    proc = secure_broker.start_secure_broker(tmp_path, port, local_port=local_port, bind="127.0.0.1", log_path=tmp_path / "mosquitto.log")
    passwords |= {name: registry.read_secret(tmp_path, name) for name in accounts.BUILTIN}
    b = Box(tmp_path, port, local_port, proc.pid, layout.paths(tmp_path).certs / "ca.crt", passwords)
    try:
        yield b
    finally:
        for peer in b.peers:
            peer.close()
        proc.terminate()
        proc.wait(5)


def service(box, name, client_id=None):
    """A connected service account on the loopback listener, with its usual client id."""
    peer = Peer(box, name, client_id=client_id or f"lineside-{name}", tls=False)
    assert peer.connect() == "accepted"
    return peer


def device(box, name):
    """A connected device over TLS whose client id is its name."""
    peer = Peer(box, name)
    assert peer.connect() == "accepted"
    return peer


def test_anonymous_clients_are_refused_on_both_listeners(box):
    assert Peer(box, None, client_id="anon-tls").connect() == "Not authorized"
    assert Peer(box, None, client_id="anon-local", tls=False).connect() == "Not authorized"


def test_wrong_password_is_refused(box):
    assert Peer(box, "hmi-a", "not-the-password").connect() == "Not authorized"
    assert Peer(box, "hmi-a", box.passwords["hmi-b"]).connect() == "Not authorized"
    assert Peer(box, "gateway", "guess", tls=False).connect() == "Not authorized"


def test_device_connects_over_tls_trusting_the_box_ca(box):
    peer = Peer(box, "hmi-a")
    assert peer.connect() == "accepted"
    assert peer.client.socket().version() in ("TLSv1.2", "TLSv1.3")
    tls12_only = ssl.create_default_context(cafile=str(box.ca))  # many PLC TLS stacks stop at 1.2
    tls12_only.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", box.port), timeout=WAIT_S) as raw,
        tls12_only.wrap_socket(raw, server_hostname="127.0.0.1") as s,
    ):
        assert s.version() == "TLSv1.2"
    system_cas = ssl.create_default_context()  # what a device without ca.crt trusts
    with socket.create_connection(("127.0.0.1", box.port), timeout=WAIT_S) as raw, pytest.raises(ssl.SSLCertVerificationError):
        system_cas.wrap_socket(raw, server_hostname="127.0.0.1")


def test_plain_mqtt_to_the_tls_port_gets_no_answer(box):
    assert Peer(box, "hmi-a", tls=False, port=box.port).connect() == "dropped"


def test_device_cannot_receive_another_devices_answers(box):
    a, b, gateway = device(box, "hmi-a"), device(box, "hmi-b"), service(box, "gateway")
    a.subscribe(f"{topics.answer_device('hmi-b')}/#")
    a.subscribe(f"{topics.answer_device('hmi-a')}/#")
    b.subscribe(f"{topics.answer_device('hmi-b')}/#")
    assert gateway.publish(f"{topics.answer_device('hmi-b')}/x", b"for b") == "Success"
    assert b.received() == [b"for b"]
    assert a.nothing(), "hmi-a read an answer meant for hmi-b"
    gateway.publish(f"{topics.answer_device('hmi-a')}/x", b"for a")
    assert a.received() == [b"for a"]


def test_device_cannot_publish_into_the_retriever(box):
    retriever, a, gateway = service(box, "retriever"), device(box, "hmi-a"), service(box, "gateway")
    retriever.subscribe(topics.RETRIEVE)
    assert a.publish(topics.RETRIEVE, b"forged search") == "Not authorized"
    assert retriever.nothing(), "a device reached the retriever's inbox"
    assert gateway.publish(topics.RETRIEVE, b"search") == "Success"
    assert retriever.received() == [b"search"]


def test_retriever_cannot_read_questions(box):
    retriever, gateway, a = service(box, "retriever"), service(box, "gateway"), device(box, "hmi-a")
    for peer in (retriever, gateway):
        for flt in topics.ASK_FILTERS:
            peer.subscribe(flt)
    assert a.publish(topics.ask_device("hmi-a"), b"q311") == "Success"
    assert gateway.received() == [b"q311"]
    assert retriever.nothing(), "the retriever saw a device's question"


def test_removed_device_is_cut_off_by_reload(box):
    a, gateway = device(box, "hmi-a"), service(box, "gateway")
    registry.remove_device(box.data, "hmi-a")
    assert Peer(box, "hmi-a", client_id="probe").connect() == "accepted", "Mosquitto reads passwd only at start and on SIGHUP"

    secure_broker.reload_broker(box.pid)
    deadline = time.monotonic() + WAIT_S
    while (result := Peer(box, "hmi-a").connect()) == "accepted" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert result == "Not authorized"
    deadline = time.monotonic() + WAIT_S
    while not a.dropped and time.monotonic() < deadline:
        time.sleep(0.05)
    assert a.dropped, "the removed device kept its open connection"
    assert device(box, "hmi-b").client.is_connected()
    assert gateway.client.is_connected()
    assert not gateway.dropped


def test_llm_reads_generate_requests_through_a_shared_subscription(box):
    llm, gateway, a = service(box, "llm"), service(box, "gateway"), device(box, "hmi-a")
    llm.subscribe(topics.shared("llm", topics.GENERATE))
    a.subscribe(topics.shared("probe", topics.GENERATE))  # a group of its own: the ACL still applies
    assert gateway.publish(topics.GENERATE, b"prompt") == "Success"
    assert llm.received() == [b"prompt"]
    assert a.nothing(), "Mosquitto must check the topic inside $share/<group>/ against the ACL"


def test_device_cannot_take_over_a_service_client_id(box):
    gateway = service(box, "gateway")
    gateway.subscribe(topics.ASK_FILTERS[1])
    impostor = Peer(box, "hmi-a", client_id=acl.GATEWAY_CLIENT_ID)
    assert impostor.connect() == "accepted"  # connected, but as client id hmi-a (use_username_as_clientid)
    time.sleep(QUIET_S)
    assert not gateway.dropped, "a device disconnected the gateway"
    assert gateway.client.is_connected()
    impostor.publish(topics.ask_device("hmi-a"), b"still listening?")
    assert gateway.received() == [b"still listening?"]


def test_device_guessing_the_llm_share_group_does_not_swallow_questions(box, tmp_path):
    # Mosquitto 2.0's acl_file does not check SUBSCRIBE: a device that joins the workers' group gets
    # a share of the questions, which the read ACL then drops. The workers' group is therefore a
    # secret name (security.share_group), and a device guessing "llm" only makes a group of its own.
    llm, gateway, a = service(box, "llm"), service(box, "gateway"), device(box, "hmi-a")
    group = registry.share_group(tmp_path)
    assert group.startswith("llm-")
    assert len(group) > 20
    assert registry.share_group(tmp_path) == group  # stable: a worker's persistent session keeps its subscription
    llm.subscribe(topics.shared(group, topics.GENERATE))
    a.subscribe(topics.shared("llm", topics.GENERATE))
    for i in range(6):
        gateway.publish(topics.GENERATE, b"prompt %d" % i)
    assert len(llm.received(6, timeout=2.0)) == 6
    assert a.nothing()


def test_a_device_asking_on_the_shared_topic_is_told_it_may_not(box):
    # docs/device-contract.md: devices ask on lineside/v1/ask/<device>; the shared lineside/v1/ask
    # is the operator's. An MQTT 5 device that follows an old example sees why it gets no answer.
    a, gateway = device(box, "hmi-a"), service(box, "gateway")
    for flt in topics.ASK_FILTERS:
        gateway.subscribe(flt)
    assert a.publish(topics.ASK, b'{"question": "F-311?"}') == "Not authorized"
    assert gateway.nothing(), "the shared ask topic reached the gateway from a device"
    assert a.publish(topics.ask_device("hmi-a"), b'{"question": "F-311?"}') == "Success"
    assert gateway.received() == [b'{"question": "F-311?"}']


def test_a_device_connects_by_any_name_the_certificate_covers_and_a_wrong_name_is_logged(tmp_path):
    """The box is reached as 127.0.0.2 and as box.plant.test (names given with --host; a loopback
    address stands in for the plant network address, which no test may send traffic to)."""
    port = free_port()
    log = tmp_path / "mosquitto.log"
    # Listening on every address (what a box does); the test connects to 127.0.0.2 only.
    proc = secure_broker.start_secure_broker(tmp_path, port, hosts=["127.0.0.2", "box.plant.test"], log_path=log)
    ca = layout.paths(tmp_path).certs / "ca.crt"
    trusting = ssl.create_default_context(cafile=str(ca))
    try:
        for name in ("127.0.0.2", "box.plant.test"):
            with socket.create_connection(("127.0.0.2", port), timeout=WAIT_S) as raw, trusting.wrap_socket(raw, server_hostname=name) as s:
                assert s.version() in ("TLSv1.2", "TLSv1.3")
        with (
            socket.create_connection(("127.0.0.2", port), timeout=WAIT_S) as raw,
            pytest.raises(ssl.SSLCertVerificationError, match="match"),
        ):
            trusting.wrap_socket(raw, server_hostname="other.plant.test")
        deadline = time.monotonic() + WAIT_S
        while "OpenSSL Error" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "OpenSSL Error" in log.read_text(), "the broker's log names the failed TLS handshake"
    finally:
        proc.terminate()
        proc.wait(5)
