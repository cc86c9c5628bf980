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

from lineside import broker, metrics
from lineside.client import ingest, wait_online
from lineside.errors import BrokerError, LinesideError
from lineside.security import accounts, certs, layout, registry, secure_broker
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

    metrics_port: int | None = None
    """Base port of the services' /metrics (lineside/metrics.py: gateway, retriever, llm, ingest at +0..+3); None: none."""
    metrics_host = "127.0.0.1"

    def __init__(
        self,
        conn: Connection,
        *,
        external_broker: bool,
        services: tuple[str, ...] = SERVICES,
        secure: bool = False,
        tls_port: int | None = None,
        hosts: tuple[str, ...] = (),
        web_port: int | None = None,
    ) -> None:
        self.conn = conn
        self.data = Path(conn.data_dir)
        self.logs = self.data / "logs"
        self.broker_log_read = 0
        """How far ``tls_notes`` has read the broker's log."""
        self.external = external_broker
        self.services = services
        self.secure = secure
        """Accounts, ACL and TLS (brokers/secure.conf): ``conn.mqtt_port`` is then the loopback
        listener of the services and the CLI (still with passwords), ``tls_port`` the devices' one."""
        self.tls_port = tls_port
        self.hosts = hosts
        self.web_port = web_port
        """HTTPS port of the web page (secure profile only); None: no page."""
        self.ws_port: int | None = None
        """Mosquitto's loopback WebSocket listener, chosen free at start, that the page's server passes through to."""
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
        if self.metrics_port:
            env[f"LINESIDE_{module.upper()}_METRICS_PORT"] = str(metrics.service_port(self.metrics_port, name))
            env[f"LINESIDE_{module.upper()}_METRICS_HOST"] = self.metrics_host
        if self.secure:
            env.pop("LINESIDE_MQTT_PASSWORD", None)
            env["LINESIDE_MQTT_USERNAME"] = module
            env["LINESIDE_MQTT_PASSWORD_FILE"] = str(layout.paths(self.data).secret(module))
            if module == "llm":
                env["LINESIDE_LLM_SHARE_GROUP"] = registry.share_group(self.data)
        with (self.logs / f"{name}.log").open("ab") as log:  # the child keeps its own descriptor
            self.procs[name] = subprocess.Popen([sys.executable, "-m", f"services.{module}"], env=env, stdout=log, stderr=log)

    def start_web(self) -> None:
        """Start the web page's server (``python -m lineside.web``) with the broker's certificate."""
        cert_dir = layout.paths(self.data).certs
        env = self.env()
        env.update(
            LINESIDE_WEB_PORT=str(self.web_port),
            LINESIDE_WEB_WS_PORT=str(self.ws_port),
            LINESIDE_WEB_CERTFILE=str(cert_dir / "server.crt"),
            LINESIDE_WEB_KEYFILE=str(cert_dir / "server.key"),
            # Its own account `web`: it adds and removes device accounts for operators (docs/web.md).
            LINESIDE_MQTT_USERNAME=accounts.WEB,
            LINESIDE_MQTT_PASSWORD_FILE=str(layout.paths(self.data).secret(accounts.WEB)),
        )
        env.pop("LINESIDE_MQTT_PASSWORD", None)
        with (self.logs / "web.log").open("ab") as log:
            self.procs["web"] = subprocess.Popen([sys.executable, "-m", "lineside.web"], env=env, stdout=log, stderr=log)
        self.deaths.setdefault("web", [])

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
            if self.web_port is not None:
                if not broker.port_free("127.0.0.1", self.web_port):
                    raise BrokerError(f"port {self.web_port} for the web page is already taken: choose another with --web-port")
                self.ws_port = broker.free_port()
            self.start_broker()
        elif not self.external:
            self.start_broker()
        elif broker.port_free(self.conn.mqtt_host, self.conn.mqtt_port):
            raise BrokerError(
                f"no broker listens on {self.conn.mqtt_host}:{self.conn.mqtt_port}: set LINESIDE_MQTT_HOST/LINESIDE_MQTT_PORT"
            )
        for name in self.services:
            self.start_service(name)
        if self.ws_port is not None:
            self.start_web()

    def start_broker(self) -> None:
        """Start (or start again, on the same ports and with its saved state) the box's own Mosquitto."""
        if self.secure:
            assert self.tls_port is not None
            self.broker = secure_broker.start_secure_broker(
                self.data,
                self.tls_port,
                local_port=self.conn.mqtt_port,
                hosts=self.hosts,
                log_path=self.logs / "mosquitto.log",
                ws_port=self.ws_port,
            )
            self.pid_file.write_text(str(self.broker.pid))
        else:
            self.broker = broker.start(self.conn.mqtt_port, self.data / "broker", log_path=self.logs / "mosquitto.log")

    def check_broker(self) -> list[str]:
        """Start the box's broker again if it died (its persistence brings back the sessions and
        queued messages; the services reconnect by themselves)."""
        if self.broker is None or self.broker.poll() is None:
            return []
        now = time.monotonic()
        deaths = self.deaths.setdefault("broker", [])
        deaths[:] = [t for t in deaths if now - t < 600] + [now]
        if len(deaths) > RESTART_LIMIT:
            code, self.broker = self.broker.returncode, None  # reported once, then left alone
            return [f"the broker keeps dying (exit {code}); left down. Last log lines:\n{self.tail('mosquitto')}"]
        note = f"the broker exited with {self.broker.returncode}; restarting"
        try:
            self.start_broker()
        except BrokerError as exc:
            return [f"{note}: {exc}; trying again"]
        return [note]

    def tail(self, name: str, lines: int = 15) -> str:
        """The last lines of a service's log."""
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def tls_notes(self) -> list[str]:
        """A plain sentence for each TLS handshake that failed since the last call (from the
        broker's log: a device that does not trust the CA or uses a name the certificate lacks)."""
        path = self.logs / "mosquitto.log"
        try:
            with path.open("rb") as f:
                f.seek(self.broker_log_read if path.stat().st_size >= self.broker_log_read else 0)
                chunk = f.read(1 << 20)
        except OSError:
            return []
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.broker_log_read = (self.broker_log_read if path.stat().st_size >= self.broker_log_read else 0) + len(complete)
        return certs.tls_failures(complete.decode("utf-8", errors="replace").splitlines())

    def check(self) -> list[str]:
        """Restart the broker and services that died; return messages about what happened (and
        about devices whose TLS handshake failed)."""
        notes = self.check_broker() + self.tls_notes()
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
            if name == "web":
                self.start_web()
            else:
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


def _web_hint(sup: Supervisor, demo_password: str | None) -> str:
    """The web page's address(es), printed by `lineside up` (docs/web.md)."""
    if sup.ws_port is None:
        return ""
    urls = [f"https://{h}:{sup.web_port}/" for h in (*sup.hosts, "127.0.0.1")]
    login = f" (the demo device: demo / {demo_password})" if demo_password else ""
    ca = layout.paths(sup.data).certs / "ca.crt"
    return f"  Web page: {' '.join(urls)}{login}; log in as a device; phones and tablets trust {ca}\n"


def up(
    conn: Connection,
    *,
    external_broker: bool,
    ingest_paths: list[Path],
    llm_workers: int = 1,
    secure: bool = False,
    tls_port: int | None = None,
    hosts: tuple[str, ...] = (),
    web_port: int | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
) -> int:
    """Run everything until SIGINT/SIGTERM."""
    signal.signal(signal.SIGTERM, _raise_stop)
    names = service_names(llm_workers)
    sup = Supervisor(
        conn,
        external_broker=external_broker,
        services=names,
        secure=secure,
        tls_port=tls_port,
        hosts=hosts,
        web_port=web_port if secure and not external_broker else None,
    )
    sup.metrics_port, sup.metrics_host = metrics_port or None, metrics_host
    try:
        demo = registry.demo_device(sup.data) if secure else None  # before the broker reads its password file
        sup.start()
        client = sup.client_conn()
        where = f"{conn.mqtt_host}:{conn.mqtt_port}" + (f" (local, with passwords) and TLS on port {tls_port}" if secure else "")
        print(
            f"broker: {'external' if external_broker else 'mosquitto'} on {where}; data in {sup.data}; logs in {sup.logs}",
            flush=True,
        )
        if secure:
            cp = certs.CertPaths(*(layout.paths(sup.data).certs / n for n in ("ca.crt", "ca.key", "server.crt", "server.key")))
            print(
                f"TLS certificate covers: {', '.join(certs.server_names(cp))} (devices: `lineside certs export DIR` for the CA)",
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
        if sup.metrics_port:
            urls = (f"{n} http://{metrics_host}:{metrics.service_port(sup.metrics_port, n)}/metrics" for n in names)
            print("metrics (Prometheus): " + ", ".join(urls), flush=True)
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
        print("\nAsk a question:\n" + _ask_hint(sup, conn, demo) + _web_hint(sup, demo) + "Press Ctrl-C to stop.", flush=True)
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
