"""Passwords: how long the generated ones are, and Mosquitto 2.0's password-file hashes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from lineside.errors import ConfigError

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
