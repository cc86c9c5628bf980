"""Start Mosquitto from the configuration in brokers/ and wait until it accepts connections."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path

from lineside.errors import BrokerError

BROKERS_DIR = Path(__file__).resolve().parent.parent / "brokers"


def mosquitto_binary() -> str:
    """Path of the mosquitto executable, or a BrokerError that says how to install it."""
    found = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None)
    if not found:
        raise BrokerError("mosquitto is not installed: run `sudo apt-get install -y mosquitto mosquitto-clients`")
    return found


def port_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) != 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing uses right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def render_config(port: int, state_dir: Path, profile: str = "local") -> Path:
    """Write brokers/<profile>.conf with its placeholders filled into ``state_dir``."""
    state_dir.mkdir(parents=True, exist_ok=True)
    template = (BROKERS_DIR / f"{profile}.conf").read_text()
    conf = template.format(port=port, persistence=state_dir, user=getpass.getuser())
    path = state_dir / "mosquitto.conf"
    path.write_text(conf)
    return path


def launch(conf: Path, ports: list[int], *, log_path: Path | None = None, timeout_s: float = 10.0) -> subprocess.Popen[bytes]:
    """Run Mosquitto with ``conf`` and return once it listens on every one of ``ports`` (on 127.0.0.1)."""
    cmd = [mosquitto_binary(), "-c", str(conf)]
    if log_path:
        with log_path.open("ab") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen(cmd, stdout=out, stderr=out)
    else:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerError(f"mosquitto exited with code {proc.returncode} at start; see {log_path or 'its output'}")
        if not any(port_free("127.0.0.1", p) for p in ports):
            return proc
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise BrokerError(f"mosquitto did not listen on port(s) {ports} within {timeout_s:g} s")


def start(port: int, state_dir: Path, *, log_path: Path | None = None, timeout_s: float = 10.0) -> subprocess.Popen[bytes]:
    """Start Mosquitto on 127.0.0.1:``port``; raise BrokerError when the port is taken or it fails."""
    if not port_free("127.0.0.1", port):
        raise BrokerError(f"port {port} on 127.0.0.1 is already taken: choose another with --port or LINESIDE_MQTT_PORT")
    return launch(render_config(port, state_dir), [port], log_path=log_path, timeout_s=timeout_s)
