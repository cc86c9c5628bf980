"""Where the security files of a data directory live, and how each one is written: whole, with its mode."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


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


def paths(data_dir: Path) -> SecurityPaths:
    """The security files under ``data_dir``."""
    return SecurityPaths(Path(data_dir) / "security")


def write_atomic(path: Path, data: bytes, mode: int) -> None:
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
