"""What a SIGKILL of Mosquitto loses, saving every 30 s against saving on every change, and what
saving costs.

For each setting: a persistent session subscribes and goes away (a service that is down); N QoS 1
messages are published to it (each acknowledged by the broker); the broker is SIGKILLed at once,
started again from its saved state, and the session collects what survived.

    .venv/bin/python bench/broker_persistence.py [--counts 8 200 2000] [--big 40]
"""

from __future__ import annotations

import argparse
import getpass
import subprocess
import tempfile
import time
from pathlib import Path

from lineside.broker import free_port, launch, mosquitto_binary

SETTINGS = {
    "autosave_interval 30": "autosave_interval 30\n",
    "on every change": "autosave_interval 1\nautosave_on_changes true\n",
}
PIECE = 256 * 2**10
"""A document piece as `lineside ingest` sends it."""


def _conf(state: Path, port: int, saving: str) -> Path:
    conf = state / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {state}/\n{saving}"
        f"max_queued_messages 100000\nmax_packet_size 67108864\nuser {getpass.getuser()}\n"
    )
    return conf


def run(saving: str, count: int, payload: bytes) -> tuple[int, float]:
    """Messages that survived the SIGKILL, and seconds the publishing took."""
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        port = free_port()
        conf = _conf(state, port, saving)
        sub = ["mosquitto_sub", "-p", str(port), "-c", "-i", "bench-session", "-q", "1", "-t", "bench/t"]
        broker = launch(conf, [port])
        subprocess.run([*sub, "-E"], check=True, timeout=10)  # the session exists, its client is gone
        body = state / "payload"
        body.write_bytes(payload)
        t = time.perf_counter()
        if len(payload) < 64:
            lines = b"".join(payload + b"\n" for _ in range(count))
            subprocess.run(["mosquitto_pub", "-p", str(port), "-q", "1", "-t", "bench/t", "-l"], input=lines, check=True, timeout=600)
        else:
            for _ in range(count):
                subprocess.run(["mosquitto_pub", "-p", str(port), "-q", "1", "-t", "bench/t", "-f", str(body)], check=True, timeout=60)
        took = time.perf_counter() - t
        broker.kill()
        broker.wait(10)
        broker = launch(conf, [port])
        try:
            small = len(payload) < 64  # counted by lines; pieces by bytes (-N: no newline after each)
            out = subprocess.run([*sub, "-W", "3", *([] if small else ["-N"])], capture_output=True, timeout=30, check=False).stdout
        finally:
            broker.terminate()
            broker.wait(10)
        return (out.count(b"\n") if small else len(out) // len(payload)), took


def main() -> None:
    """Print survivors and publishing time for each saving setting."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", type=int, nargs="+", default=[8, 200, 2000], help="small messages published before the SIGKILL")
    ap.add_argument("--big", type=int, default=40, help="256 KiB document pieces published before the SIGKILL")
    args = ap.parse_args()
    print(f"mosquitto: {mosquitto_binary()}")
    for name, saving in SETTINGS.items():
        for n in args.counts:
            survived, took = run(saving, n, b"question")
            print(f"{name:22} {n:5} small messages: {survived:5} survived; publishing took {took:.2f} s")
        survived, took = run(saving, args.big, b"x" * PIECE)
        print(f"{name:22} {args.big:5} pieces of 256 KiB: {survived:5} survived; publishing took {took:.2f} s")


if __name__ == "__main__":
    main()
