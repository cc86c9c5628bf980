"""Mosquitto with the secure configuration: render brokers/secure.conf for a data directory, start it, reload it."""

from __future__ import annotations

import getpass
import os
import re
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from lineside.broker import BROKERS_DIR, launch, port_free
from lineside.errors import BrokerError
from lineside.security.certs import CertPaths, box_names, certs_init
from lineside.security.layout import paths
from lineside.security.registry import ensure_services


def render_secure_config(
    data_dir: Path,
    port: int,
    *,
    local_port: int | None = None,
    bind: str = "0.0.0.0",  # noqa: S104 - devices reach the broker over the plant network
    certs: CertPaths | None = None,
    ws_port: int | None = None,
) -> Path:
    """Write brokers/secure.conf filled in for ``data_dir`` to ``<data_dir>/broker/mosquitto-secure.conf``."""
    sp = paths(data_dir)
    cp = certs or certs_init(sp.certs)
    state_dir = Path(data_dir) / "broker"
    state_dir.mkdir(parents=True, exist_ok=True)
    template = (BROKERS_DIR / "secure.conf").read_text()
    if local_port is None:
        template = re.sub(r"(?ms)^# >>> local listener$.*?^# <<< local listener\n", "", template)
    if ws_port is None:
        template = re.sub(r"(?ms)^# >>> web listener$.*?^# <<< web listener\n", "", template)
    conf = template.format(
        port=port,
        bind=bind,
        local_port=local_port,
        ws_port=ws_port,
        persistence=state_dir,
        user=getpass.getuser(),
        passwd=sp.passwd,
        acl=sp.acl,
        cafile=cp.ca_cert,
        certfile=cp.server_cert,
        keyfile=cp.server_key,
    )
    path = state_dir / "mosquitto-secure.conf"
    path.write_text(conf)
    return path


def start_secure_broker(
    data_dir: Path,
    port: int,
    *,
    local_port: int | None = None,
    bind: str = "0.0.0.0",  # noqa: S104 - devices reach the broker over the plant network
    hosts: Sequence[str] = (),
    log_path: Path | None = None,
    timeout_s: float = 10.0,
    ws_port: int | None = None,
) -> subprocess.Popen[bytes]:
    """Create accounts, files and certificates as needed, start Mosquitto with secure.conf, wait until it listens.

    ``ws_port``: MQTT over WebSockets on 127.0.0.1 for the web page's server (lineside/web)."""
    ports = [p for p in (port, local_port, ws_port) if p is not None]
    for p in ports:
        if not port_free("127.0.0.1", p):
            raise BrokerError(f"port {p} on 127.0.0.1 is already taken: choose another")
    ensure_services(data_dir)
    conf = render_secure_config(
        data_dir, port, local_port=local_port, bind=bind, certs=certs_init(paths(data_dir).certs, [*hosts, *box_names()]), ws_port=ws_port
    )
    return launch(conf, ports, log_path=log_path, timeout_s=timeout_s)


def reload_broker(pid: int) -> None:
    """Make a running Mosquitto re-read its password file and ACL (SIGHUP)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        raise BrokerError(f"no broker process {pid}: start it, it reads the new files at start") from None
    if b"mosquitto" not in cmdline:
        # A pid file left by a broker that died: the number may now belong to anything else.
        raise BrokerError(f"process {pid} is not Mosquitto (a stale pid file?): start the broker, it reads the new files at start")
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise BrokerError(f"no broker process {pid}: start it, it reads the new files at start") from None
