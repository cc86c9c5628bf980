"""`lineside backup`: one file with a manifest; restored whole or not at all."""

from __future__ import annotations

import gzip
import io
import json
import sqlite3
import tarfile

import numpy as np
import pytest

from lineside import backup
from lineside.cli import main as cli
from schemas.messages import Chunk
from services.retriever import kbcheck
from services.retriever.adapters import Index

DIM = 16


@pytest.fixture
def data(tmp_path):
    """A data directory as a box has it: knowledge base, original documents, accounts, keys, logs."""
    d = tmp_path / "box"
    idx = Index(d / "index", dim=DIM)
    vecs = np.random.default_rng(1).normal(size=(2, DIM)).astype(np.float32)
    vecs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True) * 0.15
    chunks = [Chunk(locator=f"row {i}", title="wl2_faults.csv", text=f"code: F-31{i}; line: WL-2; action: reset") for i in range(2)]
    idx.replace("wl2_faults.csv", "wl2_faults", "v1", chunks, vecs)
    idx.close()
    (d / "documents").mkdir()
    (d / "documents" / "wl2_faults.csv").write_text("code,line,action\nF-310,WL-2,reset\nF-311,WL-2,reset\n")
    (d / "security" / "certs").mkdir(parents=True)
    (d / "security" / "secrets").mkdir()
    (d / "security" / "accounts.json").write_text(json.dumps({"accounts": [{"name": "hmi-wl2", "kind": "device", "hash": "$7$x"}]}))
    (d / "security" / "certs" / "ca.crt").write_text("CERT")
    (d / "security" / "certs" / "ca.key").write_text("PRIVATE KEY")
    (d / "security" / "secrets" / "gateway.password").write_text("s3cret")
    (d / "logs").mkdir()
    (d / "logs" / "gateway.log").write_text("not backed up\n")
    return d


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and "-wal" not in p.name}


def test_backup_and_restore_into_an_empty_directory_give_the_same_knowledge_base_without_keys(data, tmp_path):
    out, manifest = backup.create(data, tmp_path / "usb")
    assert out.parent == tmp_path / "usb"
    assert out.name.endswith(backup.SUFFIX)
    assert (manifest.documents, manifest.chunks, manifest.with_keys) == (1, 2, False)
    names = {m.name for m in manifest.members}
    assert {"index/chunks.sqlite3", "index/vectors.faiss", "documents/wl2_faults.csv", "security/accounts.json"} <= names
    assert not names & {"security/certs/ca.key", "security/secrets/gateway.password", "logs/gateway.log"}
    assert "security/certs/ca.crt" in names

    restored = backup.restore(out, tmp_path / "new")
    assert restored.members == manifest.members
    assert kbcheck.check(tmp_path / "new" / "index").ok
    with sqlite3.connect(tmp_path / "new" / "index" / "chunks.sqlite3") as db:
        assert db.execute("SELECT doc, text FROM chunks ORDER BY id").fetchall() == [
            ("wl2_faults.csv", "code: F-310; line: WL-2; action: reset"),
            ("wl2_faults.csv", "code: F-311; line: WL-2; action: reset"),
        ]
    before, after = _tree(data), _tree(tmp_path / "new")
    assert after["documents/wl2_faults.csv"] == before["documents/wl2_faults.csv"]
    assert after["security/accounts.json"] == before["security/accounts.json"]


def test_with_keys_the_private_keys_and_service_passwords_travel_too(data, tmp_path):
    out, manifest = backup.create(data, tmp_path / "b.lineside-backup.tar.gz", with_keys=True)
    assert manifest.with_keys
    backup.restore(out, tmp_path / "new")
    assert (tmp_path / "new" / "security" / "certs" / "ca.key").read_text() == "PRIVATE KEY"
    assert (tmp_path / "new" / "security" / "secrets" / "gateway.password").stat().st_mode & 0o077 == 0


def _damaged(out, tmp_path, how):
    raw = out.read_bytes()
    bad = tmp_path / f"{how}{backup.SUFFIX}"
    if how == "truncated":
        bad.write_bytes(raw[: len(raw) // 2])
    elif how == "corrupt":
        mid = len(raw) // 2
        bad.write_bytes(raw[:mid] + bytes([raw[mid] ^ 0xFF]) + raw[mid + 1 :])
    elif how == "foreign":
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo("holiday.jpg")
            info.size = 3
            tar.addfile(info, io.BytesIO(b"jpg"))
        bad.write_bytes(buf.getvalue())
    elif how == "not_gzip":
        bad.write_bytes(b"PK\x03\x04 a zip file")
    elif how == "member_swapped":  # a whole tarball whose file differs from the manifest's sha256
        with tarfile.open(out, "r:gz") as src, tarfile.open(bad, "w:gz") as dst:
            for info in src:
                body = src.extractfile(info).read()
                if info.name == "documents/wl2_faults.csv":
                    body = body.replace(b"F-311", b"F-999")
                dst.addfile(info, io.BytesIO(body))
    return bad


@pytest.mark.parametrize("how", ["truncated", "corrupt", "foreign", "not_gzip", "member_swapped"])
def test_a_damaged_or_foreign_file_is_refused_and_changes_nothing(data, tmp_path, how):
    out, _ = backup.create(data, tmp_path / "good.lineside-backup.tar.gz")
    bad = _damaged(out, tmp_path, how)
    target = tmp_path / "existing"
    target.mkdir()
    (target / "keep.txt").write_text("the operator's file")
    before = _tree(target)
    with pytest.raises(backup.BackupError) as err:
        backup.restore(bad, target, force=True)
    assert str(bad) in str(err.value)
    assert _tree(target) == before
    assert [p.name for p in target.iterdir()] == ["keep.txt"]  # no staging left behind


def test_a_non_empty_directory_is_refused_without_force_and_replaced_with_it(data, tmp_path):
    out, _ = backup.create(data, tmp_path / "b.lineside-backup.tar.gz")
    with pytest.raises(backup.BackupError, match="not empty"):
        backup.restore(out, data)
    (data / "documents" / "wl2_faults.csv").write_text("edited after the backup")
    (data / "documents" / "later.md").write_text("added after the backup")
    backup.restore(out, data, force=True)
    assert "F-311" in (data / "documents" / "wl2_faults.csv").read_text()
    assert not (data / "documents" / "later.md").exists()  # the knowledge base is the backup's again
    assert (data / "logs" / "gateway.log").exists()  # what is not in backups is left alone
    assert kbcheck.check(data / "index").ok


def test_the_cli_creates_lists_and_restores(data, tmp_path, capsys):
    usb = tmp_path / "usb"
    usb.mkdir()
    assert cli(["backup", "create", str(usb), "--data", str(data)]) == 0
    (usb / f"junk{backup.SUFFIX}").write_bytes(gzip.compress(b"junk"))
    assert cli(["backup", "list", str(usb)]) == 0
    listed = capsys.readouterr().out
    assert "1 document(s), 2 chunks" in listed
    assert f"junk{backup.SUFFIX}: " in listed
    assert "not a readable backup" in listed
    made = next(p for p in usb.iterdir() if not p.name.startswith("junk"))
    assert cli(["backup", "restore", str(made), "--data", str(tmp_path / "new")]) == 0
    assert cli(["backup", "restore", str(usb / f"junk{backup.SUFFIX}"), "--data", str(tmp_path / "other")]) == 2
    assert "error:" in capsys.readouterr().err


def test_an_index_update_during_the_copy_never_pairs_old_chunks_with_new_vectors(data, tmp_path, monkeypatch):
    # The retriever stores a document while the backup runs: its chunks are committed right after
    # the chunk store was copied, and the vector file is saved before it is copied.
    real = backup._snapshot
    updated = []

    def snapshot_then_update(src, dst):
        real(src, dst)
        if src.name == "chunks.sqlite3" and not updated:
            updated.append(True)
            idx = Index(data / "index", dim=DIM)
            vec = np.random.default_rng(2).normal(size=(1, DIM)).astype(np.float32)
            idx.replace(
                "wl2_notes.md",
                "wl2_notes",
                "v1",
                [Chunk(locator="section x", title="notes", text="clamp 44 N·m")],
                vec / np.linalg.norm(vec) * 0.15,
            )
            idx.close()

    monkeypatch.setattr(backup, "_snapshot", snapshot_then_update)
    out, manifest = backup.create(data, tmp_path / "usb")
    assert updated
    assert manifest.chunks == 3  # taken again after the update: the new document is in
    backup.restore(out, tmp_path / "new")
    report = kbcheck.check(tmp_path / "new" / "index")
    assert report.ok, report.problems
    assert (report.chunks, report.vectors) == (3, 3)
