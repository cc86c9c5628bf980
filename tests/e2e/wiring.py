"""A secured box for the wiring examples (examples/node-red, examples/ignition, examples/plc, docs/integration.md):
device accounts made with the CLI as an engineer makes them, and the CA exported with `lineside certs export`."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from lineside import cli
from tests.conftest import EXAMPLES, Stack, start_stack

ANSWERABLE = "What is the nominal press force of the PX-200 press?"
"""A question the sample documents in examples/docs answer ("2000 kN")."""
OUT_OF_SCOPE = "What is on the canteen lunch menu on Friday?"


def start_box(data: Path, env: dict[str, str] | None = None) -> Stack:
    """The secure profile with the sample documents; no language model (answers quote the best
    passage, streamed like a model's), so the examples' plumbing is tested in seconds."""
    return start_stack(data, sorted((EXAMPLES / "docs").iterdir()), env={"LINESIDE_LLM_PROFILE": "none", **(env or {})}, secure=True)


def run_cli(*argv: str) -> str:
    """Run the `lineside` command line in-process and return what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(list(argv)) == 0
    return out.getvalue()


def add_device(box: Stack, name: str) -> str:
    """`lineside device add NAME`; the password it prints once."""
    printed = run_cli("device", "add", name, "--data", str(box.data))
    return next(line.split(": ", 1)[1] for line in printed.splitlines() if line.startswith("password"))


def export_ca(box: Stack, directory: Path) -> Path:
    """`lineside certs export DIR`: the CA certificate a device trusts."""
    run_cli("certs", "export", str(directory), "--data", str(box.data))
    return directory / "lineside-ca.crt"
