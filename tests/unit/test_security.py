"""Broker security files: password hashes Mosquitto accepts, the ACL, the device registry, certificates."""

import base64
import hashlib
import ipaddress
import json
import re
import shutil
import stat
import subprocess

import pytest
from cryptography import x509
from cryptography.x509 import verification
from paho.mqtt.client import topic_matches_sub

from lineside.errors import BrokerError, ConfigError
from lineside.security import acl, certs, layout, passwords, registry, secure_broker
from lineside.security.accounts import BUILTIN, Account
from schemas import topics

INTERNAL_TOPICS = (
    topics.RETRIEVE,
    topics.INDEX,
    topics.KB,
    topics.GENERATE,
    topics.INGEST_DOCUMENT,
    topics.reply_inbox("lineside-gateway"),
    topics.reply_inbox("hmi-3"),
)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def parse_acl(text):
    """user -> [(access, topic filter)], failing on anything the tests do not expect (pattern lines)."""
    rules, user = {}, None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word == "user":
            user = rest
            rules.setdefault(user, [])
        else:
            assert word == "topic", f"unexpected ACL line {line!r}"
            access, _, topic = rest.partition(" ")
            assert user is not None, f"rule outside a user section: {line!r}"
            rules[user].append((access, topic))
    return rules


def allowed(rules, user, access, topic):
    """Mosquitto's decision for ``user`` doing ``access`` (read/write) on ``topic`` under these rules."""
    return any(access in a.replace("readwrite", "read write").split() and topic_matches_sub(f, topic) for a, f in rules.get(user, []))


# ---------------------------------------------------------------------------------------------
# Password hashes


def test_hash_is_mosquitto_pbkdf2_sha512():
    encoded = passwords.hash_password("flange-85Nm")
    m = re.fullmatch(r"\$7\$(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)", encoded)
    assert m, encoded
    iterations, salt, digest = int(m[1]), base64.b64decode(m[2]), base64.b64decode(m[3])
    assert (iterations, len(salt), len(digest)) == (passwords.ITERATIONS, 12, 64)
    assert hashlib.pbkdf2_hmac("sha512", b"flange-85Nm", salt, iterations) == digest
    assert passwords.hash_password("flange-85Nm") != encoded, "every hash needs its own salt"


def test_verify_accepts_the_right_password_only():
    encoded = passwords.hash_password("s3cret", iterations=101)
    assert passwords.verify_password("s3cret", encoded)
    assert not passwords.verify_password("s3cret ", encoded)
    assert not passwords.verify_password("s3cret", "$7$101$bad$bad")
    assert not passwords.verify_password("s3cret", "plaintext")


@pytest.mark.skipif(not shutil.which("mosquitto_passwd"), reason="mosquitto_passwd is not installed")
@pytest.mark.parametrize("algorithm", ["sha512-pbkdf2", "sha512"])
def test_verify_understands_what_mosquitto_passwd_writes(tmp_path, algorithm):
    pwfile = tmp_path / "pw"
    # A throwaway password on a command line is fine in a test; the library never does this.
    subprocess.run(["mosquitto_passwd", "-H", algorithm, "-c", "-b", str(pwfile), "u", "not-a-secret"], check=True)
    encoded = pwfile.read_text().strip().split(":", 1)[1]
    assert encoded.startswith("$7$" if algorithm == "sha512-pbkdf2" else "$6$")
    assert passwords.verify_password("not-a-secret", encoded)
    assert not passwords.verify_password("not-a-secreT", encoded)


def test_empty_password_refused():
    with pytest.raises(ConfigError, match="empty password"):
        passwords.hash_password("")


# ---------------------------------------------------------------------------------------------
# ACL


@pytest.fixture
def acl_rules():
    accounts = [Account(name=n, kind="service") for n in BUILTIN] + [
        Account(name="hmi-3", kind="device", line="Line 3"),
        Account(name="plc-7", kind="device", can_ingest=True),
    ]
    text = acl.render_acl(accounts)
    assert "pattern" not in text, "pattern lines apply to every account, services included"
    return parse_acl(text)


def test_devices_ask_and_read_only_their_own_answers(acl_rules):
    for dev, other in (("hmi-3", "plc-7"), ("plc-7", "hmi-3")):
        # Only its own ask topic: the topic is what tells the gateway which device asks.
        assert not allowed(acl_rules, dev, "write", topics.ASK)
        assert allowed(acl_rules, dev, "write", topics.ask_device(dev))
        assert not allowed(acl_rules, dev, "write", topics.ask_device(other))
        assert allowed(acl_rules, dev, "read", topics.answer_device(dev))  # MQTT 3.1.1 answers
        assert allowed(acl_rules, dev, "read", f"{topics.answer_device(dev)}/9f2c")  # MQTT 5 reply topic
        assert allowed(acl_rules, dev, "read", topics.stream_topic(f"{topics.answer_device(dev)}/9f2c"))
        assert not allowed(acl_rules, dev, "read", topics.answer_device(other))
        assert not allowed(acl_rules, dev, "read", f"{topics.answer_device(other)}/9f2c")
        assert not allowed(acl_rules, dev, "write", topics.answer_device(dev)), "a device must not fake answers"
        assert not allowed(acl_rules, dev, "read", topics.ASK), "a device must not read other devices' questions"
        assert allowed(acl_rules, dev, "read", topics.status("gateway"))
        assert not allowed(acl_rules, dev, "write", topics.status("gateway"))


def test_no_device_touches_internal_topics_except_sending_documents(acl_rules):
    for topic in INTERNAL_TOPICS:
        for dev in ("hmi-3", "plc-7"):
            assert not allowed(acl_rules, dev, "read", topic), (dev, topic)
        assert not allowed(acl_rules, "hmi-3", "write", topic), topic
        assert allowed(acl_rules, "plc-7", "write", topic) == (topic == topics.INGEST_DOCUMENT), topic
    assert allowed(acl_rules, "plc-7", "read", topics.INGEST_STATUS)
    assert not allowed(acl_rules, "hmi-3", "read", topics.INGEST_STATUS)


def test_services_get_what_they_use_and_no_device_topics(acl_rules):
    gateway = [
        ("read", topics.ASK),
        ("read", topics.ask_device("hmi-3")),
        ("write", f"{topics.answer_device('hmi-3')}/9f2c"),
        ("write", topics.answer_device("plc-7")),
        ("write", topics.RETRIEVE),
        ("write", topics.GENERATE),
        ("read", topics.reply_inbox("lineside-gateway")),
        ("write", topics.status("gateway")),
    ]
    retriever = [
        ("read", topics.RETRIEVE),
        ("read", topics.INDEX),
        ("read", topics.KB),
        ("write", topics.reply_inbox("lineside-gateway")),
        ("write", topics.reply_inbox("lineside-cli-0a1b2c")),
        ("write", topics.INGEST_STATUS),
        ("write", topics.status("retriever")),
    ]
    llm = [
        ("read", topics.GENERATE),
        ("write", topics.reply_inbox("lineside-gateway")),
        ("write", topics.status("llm")),
        ("write", topics.status("llm-2")),
    ]
    ingest = [
        ("read", topics.INGEST_DOCUMENT),
        ("write", topics.INDEX),
        ("write", topics.INGEST_STATUS),
        ("write", topics.status("ingest")),
    ]
    for user, needs in (("gateway", gateway), ("retriever", retriever), ("llm", llm), ("ingest", ingest)):
        for access, topic in needs:
            assert allowed(acl_rules, user, access, topic), (user, access, topic)
    for user in ("retriever", "llm", "ingest"):
        for topic in (topics.ASK, topics.ask_device("hmi-3"), topics.answer_device("hmi-3"), f"{topics.answer_device('hmi-3')}/x"):
            assert not allowed(acl_rules, user, "read", topic), (user, topic)
            assert not allowed(acl_rules, user, "write", topic), (user, topic)
    assert not allowed(acl_rules, "gateway", "read", topics.reply_inbox("lineside-cli-0a1b2c")), "the gateway reads its own inbox only"
    assert not allowed(acl_rules, "llm", "write", topics.status("gateway")), "a service must not fake another's status"
    assert not allowed(acl_rules, "retriever", "write", topics.GENERATE)


def test_admin_has_the_whole_tree_and_nothing_else(acl_rules):
    for topic in (topics.KB, topics.INDEX, topics.reply_inbox("lineside-cli-1"), topics.ASK, topics.status("gateway")):
        assert allowed(acl_rules, "admin", "read", topic)
        assert allowed(acl_rules, "admin", "write", topic)
    assert not allowed(acl_rules, "admin", "read", "$SYS/broker/clients/connected")
    assert not allowed(acl_rules, "admin", "write", "elsewhere/x")


def test_gateway_inbox_in_the_acl_is_the_gateways_default_client_id():
    from services.gateway.settings import GatewaySettings

    assert GatewaySettings().client_id == acl.GATEWAY_CLIENT_ID


# ---------------------------------------------------------------------------------------------
# Registry and files


def test_services_created_once_with_private_secrets(tmp_path):
    files = registry.ensure_services(tmp_path)
    assert set(files) == {"gateway", "retriever", "llm", "ingest", "admin", "web"}
    first = {n: p.read_text() for n, p in files.items()}
    assert len(set(first.values())) == 6
    assert all(len(pw) >= 40 for pw in first.values())
    assert registry.ensure_services(tmp_path) == files
    assert {n: p.read_text() for n, p in files.items()} == first, "a second call must not change any password"
    sp = layout.paths(tmp_path)
    hashes = dict(line.split(":", 1) for line in sp.passwd.read_text().splitlines())
    for name, password in first.items():
        assert passwords.verify_password(password, hashes[name])
    for path in (sp.passwd, sp.acl, sp.accounts, *files.values()):
        assert mode(path) == 0o600, path
    assert mode(sp.root) == 0o700
    assert mode(sp.secrets) == 0o700


def test_replacing_a_service_secret_file_changes_its_hash(tmp_path):
    files = registry.ensure_services(tmp_path)
    files["llm"].write_text("rotated-by-hand-0123456789")
    registry.write_files(tmp_path)
    line = next(x for x in layout.paths(tmp_path).passwd.read_text().splitlines() if x.startswith("llm:"))
    assert passwords.verify_password("rotated-by-hand-0123456789", line.split(":", 1)[1])


def test_add_list_remove_devices(tmp_path):
    pw = registry.add_device(tmp_path, "hmi-3", line="Line 3")
    registry.add_device(tmp_path, "plc-7", can_ingest=True)
    assert [(d.name, d.line, d.can_ingest) for d in registry.list_devices(tmp_path)] == [("hmi-3", "Line 3", False), ("plc-7", None, True)]
    sp = layout.paths(tmp_path)
    hashes = dict(line.split(":", 1) for line in sp.passwd.read_text().splitlines())
    assert passwords.verify_password(pw, hashes["hmi-3"])
    assert "user plc-7" in sp.acl.read_text()
    assert mode(sp.passwd) == 0o600

    registry.remove_device(tmp_path, "plc-7")
    assert [d.name for d in registry.list_devices(tmp_path)] == ["hmi-3"]
    assert "plc-7" not in sp.passwd.read_text()
    assert "plc-7" not in sp.acl.read_text()
    assert {"gateway", "admin"} <= {line.split(":")[0] for line in sp.passwd.read_text().splitlines()}, "services must survive"


def test_no_plaintext_password_in_the_registry_or_broker_files(tmp_path):
    secrets = [registry.add_device(tmp_path, "hmi-3"), registry.add_device(tmp_path, "plc-7", can_ingest=True)]
    secrets += [registry.read_secret(tmp_path, n) for n in BUILTIN]
    sp = layout.paths(tmp_path)
    for path in (sp.accounts, sp.acl, sp.passwd):
        text = path.read_text()
        for password in secrets:
            assert password not in text, f"a password is in {path.name}"
    assert len(set(secrets)) == len(secrets)


def test_duplicate_device_refused_and_password_kept(tmp_path):
    pw = registry.add_device(tmp_path, "hmi-3")
    with pytest.raises(ConfigError, match="'hmi-3' already exists"):
        registry.add_device(tmp_path, "hmi-3", can_ingest=True)
    hashes = dict(line.split(":", 1) for line in layout.paths(tmp_path).passwd.read_text().splitlines())
    assert passwords.verify_password(pw, hashes["hmi-3"])
    assert not registry.list_devices(tmp_path)[0].can_ingest


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("line3/hmi", "'/'"),
        ("hmi+", "'\\+'"),
        ("#", "'#'"),
        ("d" * 65, "longer than 64"),
        ("hmi 3", "letters, digits"),
        ("hmi:3", "letters, digits"),
        ("hmi\n3", "letters, digits"),
        ("-hmi", "starting with a letter or digit"),
        ("gateway", "reserved"),
        ("Admin", "reserved"),
        ("lineside-gateway", "client ids of the services"),
    ],
)
def test_invalid_device_names_refused(tmp_path, name, why):
    with pytest.raises(ConfigError, match=why):
        registry.add_device(tmp_path, name)
    assert not registry.list_devices(tmp_path)


def test_remove_unknown_or_builtin_refused(tmp_path):
    with pytest.raises(ConfigError, match="no device named 'hmi-9'"):
        registry.remove_device(tmp_path, "hmi-9")
    with pytest.raises(ConfigError, match="built-in"):
        registry.remove_device(tmp_path, "gateway")


def test_write_files_restores_deleted_broker_files(tmp_path):
    pw = registry.add_device(tmp_path, "hmi-3")
    sp = layout.paths(tmp_path)
    sp.passwd.unlink()
    sp.acl.unlink()
    registry.write_files(tmp_path)
    hashes = dict(line.split(":", 1) for line in sp.passwd.read_text().splitlines())
    assert passwords.verify_password(pw, hashes["hmi-3"])
    assert "user hmi-3" in sp.acl.read_text()
    assert not list(sp.root.glob(".passwd.*")), "no temporary file left behind"


# ---------------------------------------------------------------------------------------------
# Certificates


def verify_server(cp, host):
    ca = x509.load_pem_x509_certificate(cp.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(cp.server_cert.read_bytes())
    name = verification.IPAddress(ipaddress.ip_address(host)) if host[0].isdigit() else verification.DNSName(host)
    verifier = verification.PolicyBuilder().store(verification.Store([ca])).build_server_verifier(name)
    verifier.verify(server, [])


def test_certs_cover_the_hosts_and_chain_to_the_ca(tmp_path):
    cp = certs.certs_init(tmp_path / "certs", ["10.20.0.5", "lineside-box.plant.local"])
    for host in ("127.0.0.1", "localhost", "10.20.0.5", "lineside-box.plant.local"):
        verify_server(cp, host)
    with pytest.raises(verification.VerificationError):
        verify_server(cp, "10.20.0.6")
    san = x509.load_pem_x509_certificate(cp.server_cert.read_bytes()).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "10.20.0.5"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "lineside-box.plant.local"]
    assert mode(cp.ca_key) == 0o600
    assert mode(cp.server_key) == 0o600
    ca = x509.load_pem_x509_certificate(cp.ca_cert.read_bytes())
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days >= 3650


def test_certs_init_is_idempotent_and_force_keeps_the_ca(tmp_path):
    cp = certs.certs_init(tmp_path, ["10.20.0.5"])
    before = {p: p.read_bytes() for p in (cp.ca_cert, cp.ca_key, cp.server_cert, cp.server_key)}
    assert certs.certs_init(tmp_path, ["10.20.0.5"]) == cp
    assert {p: p.read_bytes() for p in before} == before

    # A new address (DHCP gave the box another one): a new server certificate covering the old
    # names and the new one, under the same CA.
    certs.certs_init(tmp_path, ["10.20.0.6"])
    assert cp.ca_cert.read_bytes() == before[cp.ca_cert], "devices trust the CA: it must not change"
    assert cp.server_key.read_bytes() != before[cp.server_key]
    verify_server(cp, "10.20.0.6")
    verify_server(cp, "10.20.0.5")
    assert certs.server_names(cp) == ["127.0.0.1", "localhost", "10.20.0.5", "10.20.0.6"]
    renewed = cp.server_key.read_bytes()
    certs.certs_init(tmp_path, ["10.20.0.6"], force=True)
    assert cp.server_key.read_bytes() != renewed
    assert cp.ca_cert.read_bytes() == before[cp.ca_cert]


def test_certs_refuse_half_a_ca(tmp_path):
    cp = certs.certs_init(tmp_path)
    cp.ca_key.unlink()
    with pytest.raises(ConfigError, match=r"only one of ca\.crt and ca\.key"):
        certs.certs_init(tmp_path)


# ---------------------------------------------------------------------------------------------
# Broker configuration


def test_secure_config_without_and_with_a_local_listener(tmp_path):
    registry.ensure_services(tmp_path)
    sp = layout.paths(tmp_path)
    conf = secure_broker.render_secure_config(tmp_path, 18883).read_text()
    assert "listener 18883 0.0.0.0" in conf
    assert conf.count("listener ") == 1
    assert "allow_anonymous false" in conf
    assert f"password_file {sp.passwd}" in conf
    assert f"acl_file {sp.acl}" in conf
    assert f"certfile {sp.certs / 'server.crt'}" in conf
    assert "{" not in conf
    assert "None" not in conf
    conf = secure_broker.render_secure_config(tmp_path, 18883, local_port=18830, bind="127.0.0.1").read_text()
    assert "listener 18830 127.0.0.1" in conf
    assert conf.index("use_username_as_clientid true") < conf.index("listener 18830"), "only the TLS listener forces client ids"


def test_certs_init_command_covers_the_hosts_given(tmp_path, capsys):
    from cryptography import x509

    from lineside import cli

    assert cli.main(["certs", "init", "--host", "10.20.0.5", "--data", str(tmp_path)]) == 0
    assert "ca.crt" in capsys.readouterr().out
    cert = x509.load_pem_x509_certificate((tmp_path / "security" / "certs" / "server.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "10.20.0.5" in [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    # Every address and name of the box itself is covered without being asked for.
    for name in certs.box_names():
        assert name in certs.server_names(certs.certs_init(tmp_path / "security" / "certs"))
    assert cli.main(["certs", "init", "--host", "box.plant.local", "--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "newly covered: box.plant.local" in out
    assert "10.20.0.5" in out  # still covered

    assert cli.main(["certs", "show", "--json", "--data", str(tmp_path)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert {"10.20.0.5", "box.plant.local", "127.0.0.1"} <= set(shown["names"])
    assert shown["not_covered"] == []
    assert len(shown["ca_sha256"].split(":")) == 32

    usb = tmp_path / "usb"
    assert cli.main(["certs", "export", str(usb), "--data", str(tmp_path)]) == 0
    exported = usb / "lineside-ca.crt"
    assert exported.read_bytes() == (tmp_path / "security" / "certs" / "ca.crt").read_bytes()
    assert mode(exported) == 0o644, "another account (node-red's) must be able to read it"
    assert shown["ca_sha256"] in capsys.readouterr().out
    assert not list(usb.glob("*.key"))
    (tmp_path / "not-a-dir").write_text("a file where the folder should be")
    assert cli.main(["certs", "export", str(tmp_path / "not-a-dir"), "--data", str(tmp_path)]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_the_box_addresses_come_from_the_kernels_own_tables():
    fib_trie = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.20.0.0/24 2 0 2
        |-- 10.20.0.0
           /24 link UNICAST
        |-- 10.20.0.5
           /32 host LOCAL
  +-- 127.0.0.0/8 2 0 2
     |-- 127.0.0.1
        /32 host LOCAL
"""
    assert certs._proc_ipv4(fib_trie) == ["10.20.0.5", "127.0.0.1"]
    if_inet6 = (
        "00000000000000000000000000000001 01 80 10 80       lo\n"
        "fe800000000000000000000000000002 02 40 20 80     eth0\n"
        "fd000000000000000000000000000005 02 40 00 80     eth0\n"
    )
    assert certs._proc_ipv6(if_inet6) == ["fd00::5"]  # loopback and link-local are left out
    assert all(n not in ("127.0.0.1", "localhost", "::1") for n in certs.box_names())


def test_reload_never_signals_a_process_that_is_not_mosquitto():
    """A pid file left by a dead broker may name another process by now: SIGHUP would kill it."""
    import os

    with pytest.raises(BrokerError, match="not Mosquitto"):
        secure_broker.reload_broker(os.getpid())  # this test process is still alive to see the error


def test_a_failed_tls_handshake_in_the_broker_log_becomes_one_plain_sentence():
    log = [
        "1795998468: New connection from 10.20.0.77:36806 on port 8883.",
        "1795998468: OpenSSL Error[0]: error:0A000418:SSL routines::tlsv1 alert unknown ca",
        "1795998468: Client <unknown> disconnected: Protocol error.",
        "1795998470: New connection from 10.20.0.78:40000 on port 8883.",
        "1795998470: New client connected from 10.20.0.78:40000 as hmi-3 (p5, c1, k30, u'hmi-3').",
    ]
    [line] = certs.tls_failures(log)
    assert "10.20.0.77" in line
    assert "tlsv1 alert unknown ca" in line
    assert "lineside certs show" in line
    assert certs.tls_failures(log[3:]) == []


def test_lineside_up_reports_each_failed_handshake_once(tmp_path):
    from lineside.settings import Connection
    from lineside.supervisor import Supervisor

    sup = Supervisor(Connection(data_dir=str(tmp_path)), external_broker=False, secure=True, tls_port=18883)
    sup.logs.mkdir(parents=True)
    log = sup.logs / "mosquitto.log"
    log.write_text(
        "1: New connection from 10.20.0.77:36806 on port 8883.\n1: OpenSSL Error[0]: error:0A000418:SSL routines::tlsv1 alert unknown ca\n"
    )
    [note] = sup.tls_notes()
    assert "10.20.0.77" in note
    assert sup.tls_notes() == [], "reported once"
    with log.open("a") as f:
        f.write(
            "2: New connection from 10.20.0.78:1 on port 8883.\n2: OpenSSL Error[0]: error:0A000086:SSL routines::certificate verify failed\n"
        )
    [note] = sup.tls_notes()
    assert "10.20.0.78" in note
