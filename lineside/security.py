"""Broker-side security for Mosquitto 2.0: password hashes, TLS certificates, accounts and the ACL.

Everything lives under ``<data dir>/security/``:

- ``accounts.json``: every account (name, kind, line, can_ingest, password hash; never a password),
- ``passwd`` and ``acl``: Mosquitto's password file and ACL, rendered from ``accounts.json``,
- ``secrets/<account>.password``: the generated passwords of the services and of ``admin``,
- ``certs/``: the box's own CA and the broker's server certificate.

Secrets are generated here and written to files with mode 0600; none is ever put on a command
line (``mosquitto_passwd -b`` would show it in ``ps``). docs/security.md has the rule table.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import getpass
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lineside.broker import BROKERS_DIR, launch, port_free
from lineside.errors import BrokerError, ConfigError
from schemas import topics

SERVICES = ("gateway", "retriever", "llm", "ingest")
"""The service accounts; each service logs in with its own name and ``secrets/<name>.password``."""
ADMIN = "admin"
"""The operator account of the CLI on the box (``lineside kb list``, ``lineside ingest``, evaluation)."""
BUILTIN = (*SERVICES, ADMIN)

CLIENT_ID_PREFIX = "lineside-"
"""Client ids of the services and the CLI start with this; a device (whose client id is its name) may not."""
GATEWAY_CLIENT_ID = "lineside-gateway"
"""The gateway's default client id (services/gateway/settings.py): its reply inbox is named after it."""

LLM_WORKERS_MAX = 8
"""The llm account may publish the status of workers llm, llm-2 ... llm-8 (``lineside up --llm-workers``):
an MQTT wildcard cannot match "llm-*", and a 2-core box runs one or two."""

ITERATIONS = 1000
"""PBKDF2 rounds of a new password hash. mosquitto_passwd 2.0 uses 101; the broker accepts any count.
Every password here is a generated 192- or 256-bit token, so stretching adds little against guessing,
and the broker computes the hash on its single thread at every connect: 1000 rounds take 0.4 ms on the
2-core development box, so a fleet reconnecting after a broker restart does not stall it."""
SALT_BYTES = 12
"""Mosquitto's salt length for both hash formats."""
DEVICE_PASSWORD_BYTES = 24
"""A device password is 32 URL-safe characters (192 bits): short enough for a PLC's password field."""
SERVICE_PASSWORD_BYTES = 32
"""Service and admin passwords are only ever read from files: 43 characters (256 bits)."""

CA_DAYS = 3650
"""The CA and the server certificate last ten years: an offline box has nobody to renew them."""

Kind = Literal["service", "device"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
"""Device names: one topic level, and safe in the password file (no ':'), the ACL (no spaces) and logs."""

# Topic filters for the ACL, all built from schemas/topics.py.
_ANSWERS = f"{topics.ANSWER_ROOT}/#"
_REPLIES = topics.reply_inbox(GATEWAY_CLIENT_ID).rpartition("/")[0] + "/#"
_RETRIEVER = topics.RETRIEVE.rpartition("/")[0] + "/#"
_INGEST = topics.INGEST_DOCUMENT.rpartition("/")[0] + "/#"
_EVERYTHING = f"{topics.ROOT}/#"


class Account(msgspec.Struct, frozen=True, kw_only=True):
    """One broker login: a built-in account (kind service) or a device."""

    name: str
    kind: Kind
    line: str | None = None
    can_ingest: bool = False
    password_hash: str = ""


class _Registry(msgspec.Struct, kw_only=True):
    version: int = 1
    accounts: list[Account] = msgspec.field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SecurityPaths:
    """Where the security files of one data directory live."""

    root: Path

    @property
    def accounts(self) -> Path:
        """The account registry (password hashes, never passwords)."""
        return self.root / "accounts.json"

    @property
    def passwd(self) -> Path:
        """Mosquitto's password file."""
        return self.root / "passwd"

    @property
    def acl(self) -> Path:
        """Mosquitto's ACL file."""
        return self.root / "acl"

    @property
    def secrets(self) -> Path:
        """Directory of the built-in accounts' password files."""
        return self.root / "secrets"

    @property
    def certs(self) -> Path:
        """Directory of the CA and the server certificate."""
        return self.root / "certs"

    def secret(self, name: str) -> Path:
        """Password file of one built-in account."""
        return self.secrets / f"{name}.password"


@dataclass(frozen=True, slots=True)
class CertPaths:
    """The files certs_init writes: give ``ca_cert`` to devices, keep the keys on the box."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def paths(data_dir: Path) -> SecurityPaths:
    """The security files under ``data_dir``."""
    return SecurityPaths(Path(data_dir) / "security")


# ---------------------------------------------------------------------------------------------
# Password hashes


def hash_password(password: str, *, iterations: int = ITERATIONS) -> str:
    """Mosquitto 2.0 password-file hash ``$7$<iterations>$<b64 salt>$<b64 PBKDF2-HMAC-SHA512>``."""
    if not password:
        raise ConfigError("empty password: generate one with secrets.token_urlsafe")
    if iterations < 1:
        raise ConfigError(f"PBKDF2 iterations must be at least 1, not {iterations}")
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches a Mosquitto ``$7$`` (PBKDF2) or ``$6$`` (salted SHA-512) hash."""
    parts = encoded.split("$")
    try:
        if len(parts) == 5 and parts[:2] == ["", "7"]:
            salt, expected = base64.b64decode(parts[3], validate=True), base64.b64decode(parts[4], validate=True)
            actual = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]))
        elif len(parts) == 4 and parts[:2] == ["", "6"]:
            salt, expected = base64.b64decode(parts[2], validate=True), base64.b64decode(parts[3], validate=True)
            actual = hashlib.sha512(password.encode() + salt).digest()
        else:
            return False
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


# ---------------------------------------------------------------------------------------------
# Files


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write a file whole or not at all (temp file, fsync, rename), created with ``mode`` from the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(sp: SecurityPaths) -> Iterator[None]:
    """Serialise changes to the registry between processes (two `lineside device add` at once)."""
    sp.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (sp.root / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _load(sp: SecurityPaths) -> list[Account]:
    if not sp.accounts.exists():
        return []
    try:
        return msgspec.json.decode(sp.accounts.read_bytes(), type=_Registry).accounts
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{sp.accounts} is not a valid account registry: {exc} (restore it from a backup)") from exc


def _save(sp: SecurityPaths, accounts: list[Account]) -> None:
    data = msgspec.json.format(msgspec.json.encode(_Registry(accounts=accounts)), indent=2)
    _write_atomic(sp.accounts, data + b"\n", 0o600)  # holds password hashes


def _ensure_builtin(sp: SecurityPaths, accounts: list[Account]) -> list[Account]:
    """Create missing secrets; (re)hash a built-in account whose secret file changed."""
    sp.secrets.mkdir(mode=0o700, parents=True, exist_ok=True)
    by_name = {a.name: a for a in accounts}
    for name in BUILTIN:
        secret_path = sp.secret(name)
        if not secret_path.exists():
            _write_atomic(secret_path, secrets.token_urlsafe(SERVICE_PASSWORD_BYTES).encode(), 0o600)
        password = secret_path.read_text()
        if not password:
            raise ConfigError(f"{secret_path} is empty: delete it and a new password is generated")
        old = by_name.get(name)
        if old is None or old.kind != "service" or not verify_password(password, old.password_hash):
            by_name[name] = Account(name=name, kind="service", password_hash=hash_password(password))
    return _ordered(by_name.values())


def _ordered(accounts: Iterable[Account]) -> list[Account]:
    """Built-in accounts first in a fixed order, then devices by name: stable files, readable diffs."""
    accounts = list(accounts)
    builtin = sorted((a for a in accounts if a.name in BUILTIN), key=lambda a: BUILTIN.index(a.name))
    return builtin + sorted((a for a in accounts if a.name not in BUILTIN), key=lambda a: a.name)


def _write_broker_files(sp: SecurityPaths, accounts: list[Account]) -> None:
    _save(sp, accounts)
    passwd = "".join(f"{a.name}:{a.password_hash}\n" for a in accounts)
    _write_atomic(sp.passwd, passwd.encode(), 0o600)
    _write_atomic(sp.acl, render_acl(accounts).encode(), 0o600)


def ensure_services(data_dir: Path) -> dict[str, Path]:
    """Create the service and admin accounts on first use; return account name -> password file."""
    sp = paths(data_dir)
    with _locked(sp):
        accounts = _ensure_builtin(sp, _load(sp))
        _write_broker_files(sp, accounts)
    return {name: sp.secret(name) for name in BUILTIN}


def share_group(data_dir: Path) -> str:
    """The llm workers' shared-subscription group, a name no device can guess.

    Mosquitto does not ACL-check SUBSCRIBE, only delivery: a device that joined a guessable
    group (``$share/llm/...``) would be handed a share of the questions and drop them.
    """
    path = paths(data_dir).secrets / "llm-share-group"
    if not path.exists():
        _write_atomic(path, f"llm-{secrets.token_hex(12)}".encode(), 0o600)
    return path.read_text().strip()


def read_secret(data_dir: Path, name: str) -> str:
    """The password of a built-in account, from its file (ensure_services creates it)."""
    path = paths(data_dir).secret(name)
    try:
        return path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"no password file {path}: create the accounts with lineside.security.ensure_services") from None


def write_files(data_dir: Path) -> None:
    """Rewrite ``passwd`` and ``acl`` from ``accounts.json``, each replaced atomically."""
    sp = paths(data_dir)
    with _locked(sp):
        _write_broker_files(sp, _ensure_builtin(sp, _load(sp)))


# ---------------------------------------------------------------------------------------------
# Devices


def check_device_name(name: str) -> str:
    """Return ``name`` if it can be a device account, else raise ConfigError saying why."""
    try:
        topics.level(name, "device name")
    except topics.TopicError as exc:
        raise ConfigError(f"invalid device name: {exc}") from exc
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"invalid device name {name!r}: use letters, digits, '.', '_' and '-', starting with a letter or digit (e.g. hmi-3)"
        )
    if name.lower() in BUILTIN:
        raise ConfigError(f"invalid device name {name!r}: it is reserved for a built-in account ({', '.join(BUILTIN)})")
    if name.lower().startswith(CLIENT_ID_PREFIX):
        raise ConfigError(
            f"invalid device name {name!r}: names starting with {CLIENT_ID_PREFIX!r} are the client ids of the services and the CLI"
        )
    return name


def add_device(data_dir: Path, name: str, line: str | None = None, can_ingest: bool = False) -> str:
    """Register a device and return its new password: it is shown once and stored only as a hash."""
    check_device_name(name)
    if line is not None and (not line.strip() or any(ord(ch) < 32 for ch in line)):
        raise ConfigError(f"invalid line {line!r}: give a non-empty name on one line, e.g. 'Line 3'")
    sp = paths(data_dir)
    with _locked(sp):
        accounts = _ensure_builtin(sp, _load(sp))
        if any(a.name == name for a in accounts):
            raise ConfigError(f"device {name!r} already exists: remove it first to issue a new password")
        password = secrets.token_urlsafe(DEVICE_PASSWORD_BYTES)
        accounts.append(Account(name=name, kind="device", line=line, can_ingest=can_ingest, password_hash=hash_password(password)))
        _write_broker_files(sp, _ordered(accounts))
    return password


DEMO = "demo"
"""The device `lineside up` creates so a first question can be asked at once; remove it on a production box."""


def demo_device(data_dir: Path) -> str | None:
    """Create the ``demo`` device on first use and return its password (kept in ``secrets/demo.password``,
    so `lineside up` can print how to ask every time); None when it was removed on purpose or made by hand."""
    sp = paths(data_dir)
    marker = sp.secrets / "demo.removed"
    if marker.exists():
        return None
    secret = sp.secret(DEMO)
    if secret.exists():
        return secret.read_text().strip()
    if any(a.name == DEMO for a in list_devices(data_dir)):
        return None
    password = add_device(data_dir, DEMO)
    _write_atomic(secret, password.encode(), 0o600)
    return password


def remove_device(data_dir: Path, name: str) -> None:
    """Delete a device account; it can no longer connect once the broker has reloaded (reload_broker)."""
    sp = paths(data_dir)
    with _locked(sp):
        accounts = _ensure_builtin(sp, _load(sp))
        if name in BUILTIN:
            raise ConfigError(f"{name!r} is a built-in account and cannot be removed")
        kept = [a for a in accounts if a.name != name]
        if len(kept) == len(accounts):
            raise ConfigError(f"no device named {name!r}: see the registered devices with list_devices")
        _write_broker_files(sp, kept)
    if name == DEMO:
        sp.secret(DEMO).unlink(missing_ok=True)
        _write_atomic(sp.secrets / "demo.removed", b"removed on purpose: `lineside up` does not create it again\n", 0o600)


def list_devices(data_dir: Path) -> list[Account]:
    """The registered devices, by name."""
    return sorted((a for a in _load(paths(data_dir)) if a.kind == "device"), key=lambda a: a.name)


# ---------------------------------------------------------------------------------------------
# ACL


def _service_rules(name: str, gateway_client_id: str) -> list[tuple[str, str]]:
    status = ("readwrite", topics.status(name))
    if name == "gateway":
        return [
            *(("read", f) for f in topics.ASK_FILTERS),
            ("write", _ANSWERS),
            ("write", topics.RETRIEVE),
            ("write", topics.GENERATE),
            ("read", topics.reply_inbox(gateway_client_id)),
            ("read", topics.STATUS_ALL),  # answers "unavailable" at once when the retriever or every LLM worker is offline
            status,
        ]
    if name == "retriever":
        return [("read", _RETRIEVER), ("write", _REPLIES), ("write", topics.INGEST_STATUS), status]
    if name == "llm":
        workers = [("readwrite", topics.status(f"llm-{i}")) for i in range(2, LLM_WORKERS_MAX + 1)]
        return [("read", topics.GENERATE), ("write", _REPLIES), status, *workers]
    if name == "ingest":
        return [("read", _INGEST), ("write", topics.INDEX), ("write", topics.INGEST_STATUS), status]
    if name == ADMIN:
        return [("readwrite", _EVERYTHING)]
    raise ConfigError(f"unknown built-in account {name!r}")


def _device_rules(device: Account) -> list[tuple[str, str]]:
    answers = topics.answer_device(device.name)
    # Not the shared lineside/v1/ask: MQTT does not tell the gateway who published a message, so a
    # device's own ask topic is what proves which device asks (its line scope and its reply topics
    # hang on that). MQTT 5 devices publish to it with a Response Topic under their answer tree.
    rules = [
        ("write", topics.ask_device(device.name)),
        ("read", answers),
        ("read", f"{answers}/#"),
        ("read", topics.STATUS_ALL),
    ]
    if device.can_ingest:
        rules += [("write", topics.INGEST_DOCUMENT), ("read", topics.INGEST_STATUS)]
    return rules


def render_acl(accounts: Iterable[Account], *, gateway_client_id: str = GATEWAY_CLIENT_ID) -> str:
    """Mosquitto ACL text: one ``user`` section per account, no ``pattern`` lines (see docs/security.md)."""
    out = [
        "# Generated by lineside.security from accounts.json: edits here are overwritten.",
        "# One section per account; anything not granted is denied. Rule table: docs/security.md.",
    ]
    for account in accounts:
        rules = _device_rules(account) if account.kind == "device" else _service_rules(account.name, gateway_client_id)
        out += ["", f"# {account.kind}", f"user {account.name}"]
        out += [f"topic {access} {topic}" for access, topic in rules]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# Certificates


def _san(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(["127.0.0.1", "localhost", *hosts]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if not host or not host.isascii() or any(ch.isspace() or ch in "/:@" for ch in host):
            raise ConfigError(f"invalid host name {host!r} for the server certificate: give an IP address or an ASCII DNS name")
        names.append(x509.DNSName(host.lower()))
    return names


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write_atomic(path, pem, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _write_atomic(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _issue_ca(cp: CertPaths, now: dt.datetime) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lineside"), x509.NameAttribute(NameOID.COMMON_NAME, "Lineside CA")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(cp.ca_key, key)
    _write_cert(cp.ca_cert, cert)
    return cert, key


def _issue_server(cp: CertPaths, hosts: Sequence[str], ca: x509.Certificate, ca_key: rsa.RSAPrivateKey, now: dt.datetime) -> None:
    san = _san(hosts)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cn = next((n.value for n in san if isinstance(n, x509.DNSName) and n.value != "localhost"), "localhost")
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lineside"), x509.NameAttribute(NameOID.COMMON_NAME, str(cn))])
        )
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=CA_DAYS), ca.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(cp.server_key, key)
    _write_cert(cp.server_cert, cert)


def _load_ca(cp: CertPaths) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    cert = x509.load_pem_x509_certificate(cp.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(cp.ca_key.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"{cp.ca_key} is not an RSA key: remove {cp.ca_key.parent} and run certs_init again")
    return cert, key


def _missing_hosts(cp: CertPaths, hosts: Sequence[str]) -> list[str]:
    cert = x509.load_pem_x509_certificate(cp.server_cert.read_bytes())
    have = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    return [str(n.value) for n in _san(hosts) if n not in have]


def certs_init(directory: Path, hosts: Sequence[str] = (), *, force: bool = False) -> CertPaths:
    """Create the box's CA and a server certificate for ``hosts`` (plus 127.0.0.1 and localhost).

    Existing files are kept: a call with the same hosts changes nothing. ``force=True`` issues a
    new server key and certificate (for example for a new host name) and keeps the CA, so the
    devices that trust ``ca.crt`` keep working. A server certificate that lacks a requested
    host is an error rather than a silent mismatch that devices would hit at connect time.
    """
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    cp = CertPaths(directory / "ca.crt", directory / "ca.key", directory / "server.crt", directory / "server.key")
    now = dt.datetime.now(dt.UTC)
    if cp.ca_cert.exists() != cp.ca_key.exists():
        raise ConfigError(f"only one of {cp.ca_cert.name} and {cp.ca_key.name} exists in {directory}: restore the other or remove both")
    if cp.ca_cert.exists():
        ca, ca_key = _load_ca(cp)
        fresh_ca = False
    else:
        ca, ca_key = _issue_ca(cp, now)
        fresh_ca = True
    server_complete = cp.server_cert.exists() and cp.server_key.exists()
    if force or fresh_ca or not server_complete:
        _issue_server(cp, hosts, ca, ca_key, now)
    else:
        missing = _missing_hosts(cp, hosts)
        if missing:
            raise ConfigError(
                f"{cp.server_cert} does not cover {', '.join(missing)}: issue a new one with certs_init(..., force=True) "
                "(the CA is kept, devices need nothing new)"
            )
    return cp


# ---------------------------------------------------------------------------------------------
# Broker


def render_secure_config(
    data_dir: Path,
    port: int,
    *,
    local_port: int | None = None,
    bind: str = "0.0.0.0",  # noqa: S104 - devices reach the broker over the plant network
    certs: CertPaths | None = None,
) -> Path:
    """Write brokers/secure.conf filled in for ``data_dir`` to ``<data_dir>/broker/mosquitto-secure.conf``."""
    sp = paths(data_dir)
    cp = certs or certs_init(sp.certs)
    state_dir = Path(data_dir) / "broker"
    state_dir.mkdir(parents=True, exist_ok=True)
    template = (BROKERS_DIR / "secure.conf").read_text()
    if local_port is None:
        template = re.sub(r"(?ms)^# >>> local listener$.*?^# <<< local listener\n", "", template)
    conf = template.format(
        port=port,
        bind=bind,
        local_port=local_port,
        persistence=state_dir,
        user=getpass.getuser(),
        passwd=sp.passwd,
        acl=sp.acl,
        cafile=cp.ca_cert,
        certfile=cp.server_cert,
        keyfile=cp.server_key,
    )
    path = state_dir / "mosquitto-secure.conf"
    path.write_text(conf)
    return path


def start_secure_broker(
    data_dir: Path,
    port: int,
    *,
    local_port: int | None = None,
    bind: str = "0.0.0.0",  # noqa: S104 - devices reach the broker over the plant network
    hosts: Sequence[str] = (),
    log_path: Path | None = None,
    timeout_s: float = 10.0,
) -> subprocess.Popen[bytes]:
    """Create accounts, files and certificates as needed, start Mosquitto with secure.conf, wait until it listens."""
    ports = [port] if local_port is None else [port, local_port]
    for p in ports:
        if not port_free("127.0.0.1", p):
            raise BrokerError(f"port {p} on 127.0.0.1 is already taken: choose another")
    ensure_services(data_dir)
    conf = render_secure_config(data_dir, port, local_port=local_port, bind=bind, certs=certs_init(paths(data_dir).certs, hosts))
    return launch(conf, ports, log_path=log_path, timeout_s=timeout_s)


def reload_broker(pid: int) -> None:
    """Make a running Mosquitto re-read its password file and ACL (SIGHUP)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        raise BrokerError(f"no broker process {pid}: start it, it reads the new files at start") from None
    if b"mosquitto" not in cmdline:
        # A pid file left by a broker that died: the number may now belong to anything else.
        raise BrokerError(f"process {pid} is not Mosquitto (a stale pid file?): start the broker, it reads the new files at start")
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise BrokerError(f"no broker process {pid}: start it, it reads the new files at start") from None
