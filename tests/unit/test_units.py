"""`lineside service install`: systemd units that systemd-analyze accepts, with quotas and hardening."""

from __future__ import annotations

import contextlib
import getpass
import io
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lineside import broker as broker_mod
from lineside import cli, units
from lineside.security.layout import paths


def _opts(tmp_path: Path, **kw) -> units.UnitOptions:
    return units.UnitOptions(user=getpass.getuser(), data_dir=tmp_path / "data", **kw)


def test_systemd_analyze_verifies_the_units(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze is missing: `make test-tools` installs it (Debian package systemd)")
    written = units.install(units.render(_opts(tmp_path)), tmp_path / "units")
    assert sorted(p.name for p in written) == sorted(
        ["lineside.target", "lineside-broker.service", *(f"lineside-{s}.service" for s in ("gateway", "retriever", "llm", "ingest"))]
    )
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, written)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "", out.stderr  # not even a warning (an unknown setting, a bad value)


def test_systemd_analyze_would_catch_a_broken_unit(tmp_path):
    unit = units.render(_opts(tmp_path))["lineside-gateway.service"]
    bad = tmp_path / "lineside-gateway.service"
    bad.write_text(unit.replace("MemoryMax=", "MemoryMax=lots").replace(str(units.UnitOptions().python), "/nonexistent/python"))
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "memory limit" in out.stderr


def test_quotas_ordering_and_hardening(tmp_path):
    rendered = units.render(_opts(tmp_path, profile="large"))
    gateway, llm = rendered["lineside-gateway.service"], rendered["lineside-llm.service"]
    for text in (gateway, llm, rendered["lineside-broker.service"]):
        for line in ("Restart=always", "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "After=network-online.target"):
            assert line in text
        assert f"ReadWritePaths={tmp_path / 'data'}" in text
        assert "WantedBy=lineside.target" in text
    assert "MemoryMax=3072M" in llm
    assert "MemoryMax=1536M" in units.render(_opts(tmp_path))["lineside-llm.service"]
    assert "CPUWeight=1000" in gateway
    assert "CPUWeight=100\n" in llm
    assert "lineside-broker.service" in gateway.split("[Service]")[0]
    assert f"LINESIDE_MQTT_PASSWORD_FILE={paths(tmp_path / 'data').secret('gateway')}" in gateway
    assert "LINESIDE_GATEWAY_METRICS_PORT=9810" in gateway
    assert "LINESIDE_LLM_METRICS_PORT=9812" in llm
    target = rendered["lineside.target"]
    assert all(name in target for name in rendered if name != "lineside.target")
    assert "WantedBy=multi-user.target" in target


def test_dry_run_prints_the_units_and_bad_options_say_what_to_fix(tmp_path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["service", "install", "--dry-run", "--data", str(tmp_path / "d"), "--profile", "tiny"]) == 0
    printed = out.getvalue()
    assert "# ---- lineside-llm.service" in printed
    assert "MemoryMax=768M" in printed
    assert "User=lineside" in printed
    assert not (tmp_path / "units").exists()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert cli.main(["service", "install", "--unit-dir", "/proc/no-such-dir/units", "--data", str(tmp_path / "d")]) == 2
    assert "--dry-run" in err.getvalue()


def test_the_broker_units_command_runs_mosquitto_in_the_foreground(tmp_path):
    """What lineside-broker.service runs: accounts, certificates, the services' settings, then Mosquitto itself."""
    port, tls = broker_mod.free_port(), broker_mod.free_port()
    data = tmp_path / "data"
    log = (tmp_path / "broker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lineside.cli", "broker", "--port", str(port), "--tls-port", str(tls), "--data", str(data)],
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 20
        while broker_mod.port_free("127.0.0.1", port) or broker_mod.port_free("127.0.0.1", tls):
            assert proc.poll() is None, (tmp_path / "broker.log").read_text()
            assert time.monotonic() < deadline, "the broker did not listen in 20 s"
            time.sleep(0.1)
        assert (data / "broker" / "mosquitto.pid").read_text() == str(proc.pid)  # exec kept the pid: reloads reach Mosquitto
        assert (data / "broker" / units.SERVICE_ENV).read_text().startswith("LINESIDE_LLM_SHARE_GROUP=")
        assert paths(data).secret("gateway").is_file()
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
