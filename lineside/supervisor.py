"""`lineside up`: the broker and the four services as child processes, restarted if they die."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from lineside import broker
from lineside.client import ingest, wait_online
from lineside.errors import BrokerError, LinesideError
from lineside.security import accounts, layout, registry, secure_broker
from lineside.settings import Connection, default_data_dir

SERVICES = ("retriever", "llm", "ingest", "gateway")
START_TIMEOUT_S = 300.0
"""First start may assemble the model (~1 s) and load llama.cpp (~10-30 s on 2 cores)."""
REEMBED_TIMEOUT_S = 3 * 3600.0
"""A knowledge base of a million chunks re-embeds in under three hours on 2 cores."""
RESTART_LIMIT = 5
"""A service that dies more than this many times in ten minutes is left down and reported."""


class _Stop(Exception):
    pass


def _raise_stop(*_: object) -> None:
    raise _Stop


class Supervisor:
    """Owns the child processes and their logs."""

    def __init__(
        self,
        conn: Connection,
        *,
        external_broker: bool,
        services: tuple[str, ...] = SERVICES,
        secure: bool = False,
        tls_port: int | None = None,
        hosts: tuple[str, ...] = (),
    ) -> None:
        self.conn = conn
        self.data = Path(conn.data_dir)
        self.logs = self.data / "logs"
        self.external = external_broker
        self.services = services
        self.secure = secure
        """Accounts, ACL and TLS (brokers/secure.conf): ``conn.mqtt_port`` is then the loopback
        listener of the services and the CLI (still with passwords), ``tls_port`` the devices' one."""
        self.tls_port = tls_port
        self.hosts = hosts
        self.broker: subprocess.Popen[bytes] | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.deaths: dict[str, list[float]] = {s: [] for s in services}

    def env(self) -> dict[str, str]:
        """Environment every child gets: connection and data dir."""
        env = dict(os.environ)
        env.update(
            LINESIDE_MQTT_HOST=self.conn.mqtt_host,
            LINESIDE_MQTT_PORT=str(self.conn.mqtt_port),
            LINESIDE_DATA_DIR=str(self.data),
        )
        # glibc gives every thread its own malloc arena; llama.cpp's and BLAS's worker threads
        # then keep hundreds of MB of freed memory resident. Two arenas: retriever peak 951 -> 800 MB.
        env.setdefault("MALLOC_ARENA_MAX", "2")
        return env

    def start_service(self, name: str) -> None:
        """Start ``python -m services.<name>`` with its log in <data>/logs/<name>.log.

        ``llm-2``, ``llm-3``... are more workers of the llm service: same module, their own
        client id (``lineside-llm-2``) and status, sharing the questions with ``llm``.
        """
        module = name.split("-", 1)[0]
        env = self.env()
        if name != module:
            env[f"LINESIDE_{module.upper()}_CLIENT_ID"] = f"lineside-{name}"
        if self.secure:
            env.pop("LINESIDE_MQTT_PASSWORD", None)
            env["LINESIDE_MQTT_USERNAME"] = module
            env["LINESIDE_MQTT_PASSWORD_FILE"] = str(layout.paths(self.data).secret(module))
            if module == "llm":
                env["LINESIDE_LLM_SHARE_GROUP"] = registry.share_group(self.data)
        with (self.logs / f"{name}.log").open("ab") as log:  # the child keeps its own descriptor
            self.procs[name] = subprocess.Popen([sys.executable, "-m", f"services.{module}"], env=env, stdout=log, stderr=log)

    def client_conn(self) -> Connection:
        """How the supervisor's own clients (readiness, ingest) connect: as ``admin`` when secure."""
        if not self.secure:
            return self.conn
        return msgspec.structs.replace(
            self.conn, mqtt_username=accounts.ADMIN, mqtt_password=registry.read_secret(self.data, accounts.ADMIN)
        )

    @property
    def pid_file(self) -> Path:
        """Where the running broker's pid is kept, for `lineside device` to make it reload its accounts."""
        return self.data / "broker" / "mosquitto.pid"

    def start(self) -> None:
        """Start the broker (unless external) and every service."""
        self.logs.mkdir(parents=True, exist_ok=True)
        if not self.external and self.secure:
            if self.tls_port is None:
                raise BrokerError("a secure broker needs a TLS port (--tls-port)")
            self.broker = secure_broker.start_secure_broker(
                self.data, self.tls_port, local_port=self.conn.mqtt_port, hosts=self.hosts, log_path=self.logs / "mosquitto.log"
            )
            self.pid_file.write_text(str(self.broker.pid))
        elif not self.external:
            self.broker = broker.start(self.conn.mqtt_port, self.data / "broker", log_path=self.logs / "mosquitto.log")
        elif broker.port_free(self.conn.mqtt_host, self.conn.mqtt_port):
            raise BrokerError(
                f"no broker listens on {self.conn.mqtt_host}:{self.conn.mqtt_port}: set LINESIDE_MQTT_HOST/LINESIDE_MQTT_PORT"
            )
        for name in self.services:
            self.start_service(name)

    def tail(self, name: str, lines: int = 15) -> str:
        """The last lines of a service's log."""
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def check(self) -> list[str]:
        """Restart services that died; return messages about what happened."""
        notes = []
        for name, proc in list(self.procs.items()):
            if proc.poll() is None:
                continue
            now = time.monotonic()
            self.deaths[name] = [t for t in self.deaths[name] if now - t < 600] + [now]
            if len(self.deaths[name]) > RESTART_LIMIT:
                notes.append(f"{name} keeps dying (exit {proc.returncode}); left down. Last log lines:\n{self.tail(name)}")
                del self.procs[name]
                continue
            notes.append(f"{name} exited with {proc.returncode}; restarting")
            self.start_service(name)
        return notes

    def stop(self) -> None:
        """SIGTERM every child, wait up to 10 s, then kill; the broker last so 'offline' is published."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)  # reap it: an unreaped child stays a zombie (and warns when collected)
        self.pid_file.unlink(missing_ok=True)
        if self.broker is not None and self.broker.poll() is None:
            self.broker.terminate()
            try:
                self.broker.wait(5)
            except subprocess.TimeoutExpired:
                self.broker.kill()
                self.broker.wait(5)


def service_names(llm_workers: int = 1) -> tuple[str, ...]:
    """The processes to run: the four services, with ``llm_workers`` llm processes sharing the questions."""
    return (*SERVICES, *(f"llm-{i}" for i in range(2, llm_workers + 1)))


def _ask_hint(sup: Supervisor, conn: Connection, password: str | None) -> str:
    """How to ask a first question on this box, printed by `lineside up`."""
    question = "What does fault P-22 mean on the PX-200 press?"  # answered from examples/docs
    env = f"LINESIDE_MQTT_PORT={conn.mqtt_port}"
    if Path(conn.data_dir).resolve() != Path(default_data_dir()).resolve():
        env += f" LINESIDE_DATA_DIR={conn.data_dir}"
    if not sup.secure:
        return (
            f'  mosquitto_rr -h {conn.mqtt_host} -p {conn.mqtt_port} -t lineside/v1/ask -e lineside/v1/answer/demo/1 -m "{question}"\n'
            f'  {env} .venv/bin/lineside ask "{question}"\n'
        )
    ca = layout.paths(sup.data).certs / "ca.crt"
    lines = [f'  {env} .venv/bin/lineside ask "{question}"   # on this box, as admin']
    if password is not None:
        lines.append(
            f"  mosquitto_rr -h 127.0.0.1 -p {sup.tls_port} --cafile {ca} -u demo -P '{password}' -i demo \\\n"
            f'      -t lineside/v1/ask/demo -e lineside/v1/answer/demo/1 -m "{question}"   # a device over TLS (the demo device)'
        )
    lines.append(f"  Devices: `lineside device add NAME [--line L]` prints a device's password once; give it {ca} to trust the broker.")
    return "\n".join(lines) + "\n"


def up(
    conn: Connection,
    *,
    external_broker: bool,
    ingest_paths: list[Path],
    llm_workers: int = 1,
    secure: bool = False,
    tls_port: int | None = None,
    hosts: tuple[str, ...] = (),
) -> int:
    """Run everything until SIGINT/SIGTERM."""
    signal.signal(signal.SIGTERM, _raise_stop)
    names = service_names(llm_workers)
    sup = Supervisor(conn, external_broker=external_broker, services=names, secure=secure, tls_port=tls_port, hosts=hosts)
    try:
        demo = registry.demo_device(sup.data) if secure else None  # before the broker reads its password file
        sup.start()
        client = sup.client_conn()
        where = f"{conn.mqtt_host}:{conn.mqtt_port}" + (f" (local, with passwords) and TLS on port {tls_port}" if secure else "")
        print(
            f"broker: {'external' if external_broker else 'mosquitto'} on {where}; data in {sup.data}; logs in {sup.logs}",
            flush=True,
        )
        print("starting services (loading models)...", flush=True)
        online = asyncio.run(wait_online(client, names, START_TIMEOUT_S))
        missing = set(names) - online
        if missing == {"retriever"} and '"reembedding"' in sup.tail("retriever", 3):
            # After an upgrade of the embedding model the knowledge base is embedded again before
            # the retriever serves (~100 chunks a second): wait for it rather than give up.
            print("the retriever is embedding the knowledge base again with its new model (once after an upgrade)...", flush=True)
            online |= asyncio.run(wait_online(client, ["retriever"], REEMBED_TIMEOUT_S))
            missing = set(names) - online
        if missing:
            for name in sorted(missing):
                print(f"error: {name} did not come online. Last log lines:\n{sup.tail(name)}", file=sys.stderr)
            return 1
        print("all services online: " + ", ".join(names), flush=True)
        if ingest_paths:
            files = [
                p
                for path in ingest_paths
                for p in (sorted(x for x in path.rglob("*") if x.is_file() and x.suffix != ".jsonl") if path.is_dir() else [path])
            ]
            results = asyncio.run(ingest(client, files, wait=True))
            for name, ev in sorted(results.items()):
                detail = f"{ev.get('chunks', 0)} chunks" if ev["stage"] != "failed" else ev.get("reason", "")
                print(f"  {ev['stage']:9} {name}: {detail}", flush=True)
        print("\nAsk a question:\n" + _ask_hint(sup, conn, demo) + "Press Ctrl-C to stop.", flush=True)
        while True:
            time.sleep(1.0)
            for note in sup.check():
                print(note, file=sys.stderr, flush=True)
    except (KeyboardInterrupt, _Stop):
        print("\nstopping...", flush=True)
        return 0
    except LinesideError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        sup.stop()
