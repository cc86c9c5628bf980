"""The drop folder: files copied into <data>/inbox are ingested; failures move to inbox/failed."""

from __future__ import annotations

import json
import os
from pathlib import Path


class DropFolder:
    """Finds files that finished arriving, remembers what was ingested, and parks failures."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.failed = root / "failed"
        self.failed.mkdir(parents=True, exist_ok=True)
        self._record_path = root / ".ingested.json"
        self._done: dict[str, str] = json.loads(self._record_path.read_text()) if self._record_path.exists() else {}
        self._sizes: dict[str, int] = {}

    def ready(self) -> list[Path]:
        """Regular, visible files whose size did not change since the previous call (copy finished)."""
        out = []
        seen: dict[str, int] = {}
        for p in sorted(self.root.iterdir()):
            if not p.is_file() or p.name.startswith("."):
                continue
            size = p.stat().st_size
            seen[p.name] = size
            if self._sizes.get(p.name) == size:
                out.append(p)
        self._sizes = seen
        return out

    def is_done(self, name: str, sha256: str) -> bool:
        """True when this exact content was already ingested from the folder."""
        return self._done.get(name) == sha256

    def mark_done(self, name: str, sha256: str) -> None:
        """Record a successful ingest (atomically, so a crash never leaves a half-written record)."""
        self._done[name] = sha256
        tmp = self._record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._done, indent=1, sort_keys=True))
        os.replace(tmp, self._record_path)

    def mark_failed(self, path: Path, reason: str) -> Path:
        """Move a file that could not be ingested to inbox/failed with a .error.txt beside it."""
        target = self.failed / path.name
        os.replace(path, target)
        (self.failed / f"{path.name}.error.txt").write_text(reason + "\n")
        self._sizes.pop(path.name, None)
        return target
