"""The box's own CA and the broker's server certificate, for TLS on the devices' listener."""

from __future__ import annotations

import datetime as dt
import ipaddress
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
        if not host or not host.isascii() or any(ch.isspace() or ch in "/:@" for ch in host):
            raise ConfigError(f"invalid host name {host!r} for the server certificate: give an IP address or an ASCII DNS name")
        names.append(x509.DNSName(host.lower()))
    return names


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
