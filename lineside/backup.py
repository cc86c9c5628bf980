"""`lineside backup create|restore|list`: the knowledge base, accounts and settings in one file.

A backup is a gzipped tarball whose first member is ``manifest.json``: the format, the versions
(Lineside, the embedding model of the index), and each member's size and sha256. SQLite databases
are copied with SQLite's online backup API, so a backup taken while the box answers is consistent;
the other files are read whole. ``restore`` checks every member against the manifest before it
writes anything, so a corrupt, truncated or foreign file changes nothing.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import sqlite3
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from lineside import __version__
from lineside.errors import LinesideError

FORMAT = "lineside-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SUFFIX = ".lineside-backup.tar.gz"

INCLUDE = ("index", "documents", "security", "audit.sqlite3", "broker/services.env")
"""What of a data directory is backed up: the knowledge base (stored chunks and vectors, index
updates not yet stored, the original documents), accounts and certificates, the audit log, and the
services' settings. Not: logs, the broker's sessions, spools, models, and the gateway's journal
(questions in flight belong to the devices' sessions on the old broker: a restored box answering
them would answer nobody)."""
PRIVATE = ("security/secrets/", "security/certs/")
"""Members that hold secrets: built-in accounts' passwords and the share group, and private keys
(``*.key`` under certs/). In a backup only with ``--with-keys``."""
SKIP_SUFFIXES = ("-wal", "-shm", "-journal", ".tmp")
"""SQLite's side files (the online backup folds them in) and half-written files."""
SQLITE_HEADER = b"SQLite format 3\x00"


class BackupError(LinesideError):
    """A backup cannot be written, or a file is not a whole Lineside backup."""


@dataclass
class Member:
    """One file in a backup."""

    name: str
    size: int
    sha256: str


@dataclass
class Manifest:
    """What a backup holds and where it comes from."""

    created_at: float
    host: str
    lineside: str
    with_keys: bool
    members: list[Member] = field(default_factory=list)
    embedding_model: str = ""
    documents: int = 0
    chunks: int = 0

    def to_json(self) -> bytes:
        """The manifest as stored in the tarball."""
        body: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, **self.__dict__}
        body["members"] = [m.__dict__ for m in self.members]
        return json.dumps(body, indent=2, ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> Manifest:
        """Parse a manifest; BackupError when it is not one of ours."""
        try:
            body = json.loads(raw)
            if body.get("format") != FORMAT:
                raise BackupError(f"{where} is not a Lineside backup (its manifest says format {body.get('format')!r})")
            if body.get("format_version") != FORMAT_VERSION:
                raise BackupError(
                    f"{where} is a Lineside backup of format {body.get('format_version')}; this Lineside reads {FORMAT_VERSION}"
                )
            members = [Member(name=str(m["name"]), size=int(m["size"]), sha256=str(m["sha256"])) for m in body["members"]]
            return cls(
                created_at=float(body["created_at"]),
                host=str(body["host"]),
                lineside=str(body["lineside"]),
                with_keys=bool(body["with_keys"]),
                members=members,
                embedding_model=str(body.get("embedding_model", "")),
                documents=int(body.get("documents", 0)),
                chunks=int(body.get("chunks", 0)),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BackupError(f"{where} has a damaged manifest: {exc}") from exc


def _private(name: str) -> bool:
    return name.startswith(PRIVATE[0]) or (name.startswith(PRIVATE[1]) and name.endswith(".key"))


def _files(data: Path, with_keys: bool) -> Iterator[tuple[str, Path]]:
    """(name in the backup, path) of every file to back up."""
    for top in INCLUDE:
        root = data / top
        found = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
        for path in found:
            name = path.relative_to(data).as_posix()
            if name.endswith(SKIP_SUFFIXES) or (_private(name) and not with_keys):
                continue
            yield name, path


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(len(SQLITE_HEADER)) == SQLITE_HEADER


def _snapshot(src: Path, dst: Path) -> None:
    """A consistent copy of a live SQLite database (the online backup API: readers and writers go on)."""
    source = sqlite3.connect(f"{src.resolve().as_uri()}?mode=ro", uri=True)
    target = sqlite3.connect(dst)
    try:
        source.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no WAL beside it
    finally:
        target.close()
        source.close()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _kb_summary(stage: Path) -> tuple[str, int, int]:
    db_path = stage / "index" / "chunks.sqlite3"
    if not db_path.exists():
        return "", 0, 0
    with sqlite3.connect(db_path) as db:
        row = db.execute("SELECT value FROM meta WHERE key = 'model'").fetchone()
        docs = db.execute("SELECT COUNT(*) FROM docs").fetchone()[0]
        chunks = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
    return (str(row[0]) if row else ""), int(docs), int(chunks)


def default_name(now: float | None = None) -> str:
    """``lineside-<host>-<UTC time>.lineside-backup.tar.gz``."""
    when = dt.datetime.fromtimestamp(now if now is not None else dt.datetime.now(dt.UTC).timestamp(), dt.UTC)
    return f"lineside-{socket.gethostname()}-{when:%Y%m%d-%H%M%S}{SUFFIX}"


INDEX = "index"
VECTORS = "vectors.faiss"
INDEX_TRIES = 50
"""Times the knowledge base is copied before giving up on a copy no index update fell into (0.2 s apart)."""


def _stage(name: str, path: Path, stage: Path, manifest: Manifest) -> None:
    """Copy one file into ``stage`` (a live SQLite database as a consistent snapshot) and list it."""
    copy = stage / name
    copy.parent.mkdir(parents=True, exist_ok=True)
    try:
        if _is_sqlite(path):
            _snapshot(path, copy)
        else:
            shutil.copyfile(path, copy)
    except FileNotFoundError:
        return  # removed while we walked (a rendered page, a finished spool file)
    except (OSError, sqlite3.Error) as exc:
        raise BackupError(f"cannot read {path}: {exc}") from exc
    manifest.members.append(Member(name=name, size=copy.stat().st_size, sha256=_sha256(copy)))


def _index_version(index: Path) -> tuple[str | None, str | None]:
    """The knowledge base's version and the version its vector file was saved for, read live."""
    try:
        db = sqlite3.connect(f"{(index / 'chunks.sqlite3').resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return None, None
    try:
        rows = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('generation', 'vectors_generation')").fetchall())
        return rows.get("generation"), rows.get("vectors_generation")
    except sqlite3.Error:
        return None, None
    finally:
        db.close()


def _stage_index(index: Path, files: list[tuple[str, Path]], stage: Path, manifest: Manifest) -> None:
    """Copy the knowledge base's files as one consistent set: the chunks and the vector file of the
    same version. The retriever stores chunks, then saves the vector file; a copy an update fell
    into (the version moved, or the vector file was not yet saved for it) is taken again. When
    updates never pause, the vector file is left out: the retriever rebuilds it from the stored
    chunks at start."""
    kept = len(manifest.members)
    for _ in range(INDEX_TRIES):
        before = _index_version(index)
        for name, path in files:
            _stage(name, path, stage, manifest)
        if before[0] == before[1] and _index_version(index) == before:
            return
        del manifest.members[kept:]
        shutil.rmtree(stage / INDEX, ignore_errors=True)
        time.sleep(0.2)
    for name, path in files:
        if not name.endswith(f"/{VECTORS}"):
            _stage(name, path, stage, manifest)


def create(data: Path, target: Path, *, with_keys: bool = False) -> tuple[Path, Manifest]:
    """Write a backup of ``data`` to ``target`` (a ``*.tar.gz`` file, or a directory to put a new file in)."""
    if not (data / "index" / "chunks.sqlite3").exists() and not (data / "security").exists():
        raise BackupError(f"{data} holds no Lineside data (set --data or LINESIDE_DATA_DIR)")
    # A name ending in .tar.gz is the file; anything else a directory (created if need be) to put one in.
    out = target / default_name() if target.is_dir() or not target.name.endswith(".tar.gz") else target
    if out.exists():
        raise BackupError(f"{out} exists already: give another name")
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(
        created_at=dt.datetime.now(dt.UTC).timestamp(), host=socket.gethostname(), lineside=__version__, with_keys=with_keys
    )
    with tempfile.TemporaryDirectory(prefix=".lineside-backup-", dir=out.parent) as tmp:
        stage = Path(tmp) / "stage"
        files = list(_files(data, with_keys))
        index = [(n, p) for n, p in files if n.startswith(f"{INDEX}/")]
        for name, path in [(n, p) for n, p in files if not n.startswith(f"{INDEX}/")]:
            _stage(name, path, stage, manifest)
        _stage_index(data / INDEX, index, stage, manifest)
        manifest.embedding_model, manifest.documents, manifest.chunks = _kb_summary(stage)
        partial = Path(tmp) / "backup.tar.gz"
        try:
            with tarfile.open(partial, "w:gz") as tar:
                raw = manifest.to_json()
                info = tarfile.TarInfo(MANIFEST)
                info.size, info.mtime, info.mode = len(raw), int(manifest.created_at), 0o600
                tar.addfile(info, io.BytesIO(raw))
                for m in manifest.members:
                    tar.add(stage / m.name, arcname=m.name, recursive=False)
            with partial.open("rb") as f:
                os.fsync(f.fileno())
            os.replace(partial, out)  # whole or not at all: a full USB stick leaves no half backup
        except OSError as exc:
            raise BackupError(f"cannot write {out}: {exc.strerror or exc}") from exc
    os.chmod(out, 0o600)  # accounts' hashes, and keys with --with-keys
    return out, manifest


def read_manifest(path: Path) -> Manifest:
    """The manifest of a backup file (its first member), without reading the rest."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST or not first.isfile():
                raise BackupError(f"{path} is not a Lineside backup (no {MANIFEST} first)")
            raw = tar.extractfile(first)
            assert raw is not None
            return Manifest.from_json(raw.read(), str(path))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise BackupError(f"{path} is not a readable backup: {exc}") from exc


def _safe(name: str) -> bool:
    p = PurePosixPath(name)
    return not p.is_absolute() and ".." not in p.parts and name != ""


def verify(path: Path, stage: Path) -> Manifest:
    """Unpack ``path`` into ``stage`` and check every member against the manifest: sizes, sha256,
    nothing missing, nothing extra. BackupError (saying what is wrong) otherwise."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST or not first.isfile():
                raise BackupError(f"{path} is not a Lineside backup (no {MANIFEST} first)")
            raw = tar.extractfile(first)
            assert raw is not None
            manifest = Manifest.from_json(raw.read(), str(path))
            expected = {m.name: m for m in manifest.members}
            seen: set[str] = set()
            for info in tar:  # the manifest again first (tarfile iterates from the start)
                if info is first:
                    continue
                if not info.isfile() or not _safe(info.name) or info.name not in expected or info.name in seen:
                    raise BackupError(f"{path} holds {info.name!r}, which its manifest does not list: not a whole Lineside backup")
                body = tar.extractfile(info)
                assert body is not None
                dest = stage / info.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                h = hashlib.sha256()
                with dest.open("wb") as out:
                    while block := body.read(1 << 20):
                        h.update(block)
                        out.write(block)
                want = expected[info.name]
                if dest.stat().st_size != want.size or h.hexdigest() != want.sha256:
                    raise BackupError(f"{path} is damaged: {info.name} does not match its sha256 in the manifest")
                seen.add(info.name)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise BackupError(f"{path} is damaged or truncated ({exc}); nothing was restored") from exc
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc}") from exc
    missing = sorted(set(expected) - seen)
    if missing:
        raise BackupError(f"{path} is truncated: {len(missing)} file(s) of its manifest are missing ({missing[0]}...)")
    return manifest


def restore(path: Path, data: Path, *, force: bool = False) -> Manifest:
    """Restore a backup into ``data``: an empty (or new) directory, or with ``force`` over an
    existing one (the backed-up parts are replaced, the rest is left). The whole file is checked
    first; a bad one changes nothing."""
    if not path.is_file():
        raise BackupError(f"no backup file {path}")
    if data.exists() and any(data.iterdir()) and not force:
        raise BackupError(
            f"{data} is not empty: restore into an empty directory, or add --force to replace its knowledge base and accounts"
        )
    data.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".lineside-restore-", dir=data) as tmp:
        stage = Path(tmp)
        manifest = verify(path, stage)
        tops = [t for t in INCLUDE if any(m.name == t or m.name.startswith(f"{t}/") for m in manifest.members)]
        for top in tops:
            old = data / top
            if old.is_dir():
                shutil.rmtree(old)
            elif old.exists():
                old.unlink()
            for side in SKIP_SUFFIXES[:3]:  # a live database's WAL must not be applied to the restored file
                Path(f"{old}{side}").unlink(missing_ok=True)
        for m in manifest.members:
            dest = data / m.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / m.name, dest)
            if _private(m.name) or m.name.startswith("security/"):
                os.chmod(dest, 0o600)
    return manifest


def listing(directory: Path) -> list[tuple[Path, Manifest | None, str]]:
    """The backups in ``directory`` (a USB stick, a NAS folder), newest first: (file, manifest or
    None, why it cannot be read)."""
    if not directory.is_dir():
        raise BackupError(f"{directory} is not a directory")
    out: list[tuple[Path, Manifest | None, str]] = []
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        try:
            out.append((path, read_manifest(path), ""))
        except BackupError as exc:
            out.append((path, None, str(exc)))
    return sorted(out, key=lambda r: -(r[1].created_at if r[1] else 0.0))
