"""Earlier versions of a document: kept when it is replaced, listed, made live again in one step."""

from __future__ import annotations

import numpy as np
import pytest

from schemas.messages import Chunk
from services.retriever import kbcheck
from services.retriever.adapters import Index
from services.retriever.versions import VersionError

DIM = 16


def _edition(n: int) -> tuple[list[Chunk], np.ndarray]:
    chunks = [Chunk(locator="row 2", title="wl2_torques.csv", text=f"station ST-04 on WL-2: clamp torque {40 + n} N·m (edition {n})")]
    v = np.random.default_rng(n).normal(size=(1, DIM)).astype(np.float32)
    return chunks, v / np.linalg.norm(v) * 0.15


def _live_text(idx: Index) -> list[str]:
    return [r[0] for r in idx._db.execute("SELECT text FROM chunks WHERE doc = 'wl2_torques.csv'")]


def test_replaced_versions_are_kept_listed_and_rolled_back_atomically(tmp_path):
    idx = Index(tmp_path / "index", dim=DIM, keep_versions=2)
    for n in (1, 2, 3, 4):
        idx.replace("wl2_torques.csv", "wl2_torques", f"sha-{n}", *_edition(n))
    history = idx.history("wl2_torques.csv")
    assert [(v.version, v.live) for v in history] == [("sha-4", True), ("sha-3", False), ("sha-2", False)]  # two kept
    assert _live_text(idx) == ["station ST-04 on WL-2: clamp torque 44 N·m (edition 4)"]

    assert idx.rollback("wl2_torques.csv") == ("sha-3", 1)  # the newest earlier one
    assert _live_text(idx) == ["station ST-04 on WL-2: clamp torque 43 N·m (edition 3)"]
    assert [(v.version, v.live) for v in idx.history("wl2_torques.csv")] == [("sha-3", True), ("sha-4", False), ("sha-2", False)]
    assert idx.rollback("wl2_torques.csv", to="sha-2") == ("sha-2", 1)
    assert _live_text(idx) == ["station ST-04 on WL-2: clamp torque 42 N·m (edition 2)"]
    # Searched in the rolled-back version only, its vector included.
    [hit] = idx.vector_ranking(_edition(2)[1][0], 5)
    assert idx._db.execute("SELECT text FROM chunks WHERE id = ?", (hit,)).fetchone()[0].endswith("(edition 2)")
    idx.close()
    assert kbcheck.check(tmp_path / "index").ok


def test_rollback_says_what_is_missing(tmp_path):
    idx = Index(tmp_path / "index", dim=DIM)
    with pytest.raises(VersionError, match="no document"):
        idx.rollback("nothing.md")
    idx.replace("wl2_torques.csv", "wl2_torques", "sha-1", *_edition(1))
    with pytest.raises(VersionError, match="no earlier version"):
        idx.rollback("wl2_torques.csv")
    idx.replace("wl2_torques.csv", "wl2_torques", "sha-2", *_edition(2))
    with pytest.raises(VersionError, match="live one already"):
        idx.rollback("wl2_torques.csv", to="sha-2")
    with pytest.raises(VersionError, match="no version sha-9"):
        idx.rollback("wl2_torques.csv", to="sha-9")
    with pytest.raises(VersionError, match="matches 2 versions"):
        idx.rollback("wl2_torques.csv", to="sha")
    assert idx.delete("wl2_torques.csv")
    assert idx.history("wl2_torques.csv") == []  # deleted everywhere, earlier versions too
    idx.close()
