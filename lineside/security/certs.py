"""The box's own CA and the broker's server certificate, for TLS on the devices' listener."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import re
import shutil
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lineside.errors import ConfigError
from lineside.security.layout import write_atomic

CA_DAYS = 3650
"""The CA and the server certificate last ten years: an offline box has nobody to renew them."""


@dataclass(frozen=True, slots=True)
class CertPaths:
    """The files certs_init writes: give ``ca_cert`` to devices, keep the keys on the box."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def _san(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(["127.0.0.1", "localhost", *hosts]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if not _valid_name(host):
            raise ConfigError(f"invalid host name {host!r} for the server certificate: give an IP address or an ASCII DNS name")
        names.append(x509.DNSName(host.lower()))
    return names


def _valid_name(host: str) -> bool:
    return bool(host) and host.isascii() and not any(ch.isspace() or ch in "/:@" for ch in host)


def _proc_ipv4(fib_trie: str) -> list[str]:
    """The box's own IPv4 addresses from /proc/net/fib_trie (the address line before "/32 host LOCAL")."""
    out: list[str] = []
    previous = ""
    for line in fib_trie.splitlines():
        text = line.strip()
        if text.startswith("/32 host LOCAL") and previous:
            out.append(previous)
        if text.startswith(("|--", "+--")):
            previous = text[3:].strip().split("/")[0]
    return out


def _proc_ipv6(if_inet6: str) -> list[str]:
    """The box's global and unique-local IPv6 addresses from /proc/net/if_inet6 (no link-local:
    an address with a zone cannot be written in a certificate or a device's broker address)."""
    out = []
    for line in if_inet6.splitlines():
        fields = line.split()
        if len(fields) >= 4 and len(fields[0]) == 32 and fields[3] == "00":  # scope 00: global
            out.append(str(ipaddress.IPv6Address(int(fields[0], 16))))
    return out


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def box_names() -> list[str]:
    """The names devices on the plant network may use for this box: every address of its own that
    is not loopback or link-local (IPv4 and IPv6), its host name, its fully qualified name and
    ``<host>.local`` (mDNS, as a Raspberry Pi announces itself). The first ``lineside up`` puts
    them all in the broker's certificate, so a PLC connecting by IP does not fail the TLS check."""
    addresses = [*_proc_ipv4(_read("/proc/net/fib_trie")), *_proc_ipv6(_read("/proc/net/if_inet6"))]
    names = []
    for a in addresses:
        ip = ipaddress.ip_address(a)
        if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast):
            names.append(str(ip))
    host = socket.gethostname().strip().lower()
    for name in (host, socket.getfqdn(host).lower() if host else "", f"{host.split('.')[0]}.local" if host else ""):
        if _valid_name(name) and name not in ("localhost", "localhost.localdomain"):
            names.append(name)
    return list(dict.fromkeys(names))


def server_names(cp: CertPaths) -> list[str]:
    """The addresses and host names the server certificate covers, as devices may write them."""
    cert = x509.load_pem_x509_certificate(cp.server_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(n.value) for n in san]


def fingerprint(path: Path) -> str:
    """SHA-256 fingerprint of a PEM certificate, as ``openssl x509 -fingerprint -sha256`` prints it."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def export_ca(cp: CertPaths, directory: Path) -> Path:
    """Copy the CA certificate (never a key) to ``directory`` as ``lineside-ca.crt``, readable by
    every account: for a USB stick, or for a service account such as node-red's, which cannot
    read the box's own 0700 certificate folder."""
    target = directory / "lineside-ca.crt"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cp.ca_cert, target)
        target.chmod(0o644)
    except OSError as exc:
        raise ConfigError(f"cannot write {target}: {exc.strerror or exc}; is the medium mounted and writable?") from exc
    # The same digest as `fingerprint`, read back from the copy: what the device will trust.
    if hashlib.sha256(target.read_bytes()).digest() != hashlib.sha256(cp.ca_cert.read_bytes()).digest():
        raise ConfigError(f"the copy {target} differs from {cp.ca_cert}: check the medium and export again")
    return target


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_atomic(path, pem, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    write_atomic(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


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

    Existing files are kept: a call with hosts the certificate covers changes nothing. When a host
    is missing (a new address, a new name), or with ``force=True``, a new server key and
    certificate are issued for the names it covered and the new ones; the CA is kept, so the
    devices that trust ``ca.crt`` keep working. ``server_names`` tells what it covers.
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
    elif _missing_hosts(cp, hosts):
        _issue_server(cp, [*server_names(cp), *hosts], ca, ca_key, now)
    return cp


_NEW_CONNECTION = re.compile(r"New connection from ([^\s]+?)(?::\d+)? on port (\d+)")
_TLS_ERROR = re.compile(r"OpenSSL Error\[\d+\]: (?:error:[0-9A-F]+:)?(?:SSL routines::)?(.+)")


def tls_failures(lines: Sequence[str]) -> list[str]:
    """One plain sentence per failed TLS handshake in Mosquitto's log ``lines``: which address,
    what OpenSSL said, and what to check. Mosquitto itself logs the failure as an ``OpenSSL Error``
    line after the client's ``New connection from`` line, then only "Protocol error"."""
    out = []
    peer = ""
    for line in lines:
        if m := _NEW_CONNECTION.search(line):
            peer = m.group(1)
        elif m := _TLS_ERROR.search(line):
            reason = m.group(1).strip().rstrip(".")
            who = f"from {peer}" if peer else "from a device"
            out.append(
                f"TLS handshake {who} failed ({reason}): the device must trust the box's CA (`lineside certs export DIR`) "
                "and connect by an address or name the certificate covers (`lineside certs show`)"
            )
            peer = ""
    return out
