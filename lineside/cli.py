"""The `lineside` command: up, ingest, ask, models."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec

from lineside.errors import ConfigError, LinesideError
from lineside.settings import Connection, load


def _conn(args: argparse.Namespace, *, as_admin: bool = True) -> Connection:
    """Connection settings from the environment and the command line.

    On the box itself, with no user name configured, the CLI logs in as ``admin`` with the
    password file in the data directory (readable only by the user that runs Lineside).
    """
    overrides: dict[str, Any] = {}
    if getattr(args, "port", None):
        overrides["mqtt_port"] = args.port
    if getattr(args, "data", None):
        overrides["data_dir"] = str(Path(args.data).resolve())
    conn = load(Connection, "LINESIDE_", overrides)
    if as_admin and conn.mqtt_username is None:
        from lineside.security.accounts import ADMIN
        from lineside.security.layout import paths

        admin = paths(Path(conn.data_dir)).secret(ADMIN)
        if admin.is_file():
            conn.mqtt_username = ADMIN
            conn.mqtt_password = admin.read_text().strip()
    return conn


def cmd_up(args: argparse.Namespace) -> int:
    """Start the broker and the four services; optionally ingest documents."""
    from lineside.supervisor import up

    if args.no_llm:
        os.environ["LINESIDE_LLM_PROFILE"] = "none"
    elif args.profile:
        os.environ["LINESIDE_LLM_PROFILE"] = args.profile
    return up(
        _conn(args, as_admin=False),
        external_broker=args.broker == "external",
        ingest_paths=[Path(p) for p in args.ingest or []],
        llm_workers=args.llm_workers,
        secure=not args.no_auth and args.broker == "local",  # an external broker has its own accounts
        tls_port=args.tls_port,
        hosts=tuple(args.host or ()),
        web_port=args.web_port or None,
        metrics_port=args.metrics_port or None,
        metrics_host=args.metrics_host,
    )


def cmd_certs(args: argparse.Namespace) -> int:
    """The box's TLS certificates: create them (covering the box's addresses and names), show what
    they cover, or export the CA certificate for devices."""
    from lineside.security.certs import CertPaths, box_names, certs_init, export_ca, fingerprint, server_names
    from lineside.security.layout import paths

    data = Path(_conn(args, as_admin=False).data_dir)
    folder = paths(data).certs
    if args.certs_command == "init":
        before = (
            server_names(CertPaths(*(folder / n for n in ("ca.crt", "ca.key", "server.crt", "server.key"))))
            if (folder / "server.crt").exists()
            else []
        )
        certs = certs_init(folder, [*(args.host or ()), *box_names()], force=args.force)
        added = [n for n in server_names(certs) if n not in before]
        print(f"CA certificate (give it to every device): {certs.ca_cert}")
        print(f"CA fingerprint (SHA-256): {fingerprint(certs.ca_cert)}")
        print(f"server certificate: {certs.server_cert}, covers: {', '.join(server_names(certs))}")
        if before and added:
            print(f"newly covered: {', '.join(added)} (restart `lineside up` to use the new certificate; devices keep the same CA)")
        return 0
    cp = CertPaths(folder / "ca.crt", folder / "ca.key", folder / "server.crt", folder / "server.key")
    if not cp.ca_cert.exists() or not cp.server_cert.exists():
        raise ConfigError(f"no certificates in {folder}: run `lineside certs init` or `lineside up` first")
    if args.certs_command == "show":
        names = server_names(cp)
        missing = [n for n in box_names() if n not in names]
        if args.json:
            print(
                json.dumps(
                    {
                        "ca": str(cp.ca_cert),
                        "ca_sha256": fingerprint(cp.ca_cert),
                        "server": str(cp.server_cert),
                        "names": names,
                        "not_covered": missing,
                    }
                )
            )
            return 0
        print(f"CA certificate: {cp.ca_cert}")
        print(f"CA fingerprint (SHA-256): {fingerprint(cp.ca_cert)}")
        print(f"server certificate covers: {', '.join(names)}")
        if missing:
            print(f"this box is also reachable as {', '.join(missing)}, which the certificate does not cover: run `lineside certs init`")
        return 0
    target = export_ca(cp, Path(args.directory))
    print(f"wrote {target} (the CA certificate only, no key; SHA-256 {fingerprint(target)})")
    return 0


def cmd_device(args: argparse.Namespace) -> int:
    """Add, list or remove device accounts; the running broker reloads them at once."""
    from lineside.security.layout import paths
    from lineside.security.registry import add_device, list_devices, remove_device
    from lineside.security.secure_broker import reload_broker

    data = Path(_conn(args, as_admin=False).data_dir)
    if args.device_command == "list":
        devices = list_devices(data)
        if args.json:
            out = [
                {"name": d.name, "line": d.line, "can_ingest": d.can_ingest} | ({"role": d.role} if d.role != "device" else {})
                for d in devices
            ]
            print(json.dumps(out, indent=2))
            return 0
        print(f"{'device':32} {'line':12} {'can ingest':10} role")
        for d in devices:
            print(f"{d.name:32} {d.line or '(all)':12} {'yes' if d.can_ingest else 'no':10} {d.role}")
        print(f"{len(devices)} device(s)")
        return 0
    if args.device_command == "add":
        password = add_device(data, args.name, line=args.line, can_ingest=args.can_ingest, role=args.role)
    else:
        remove_device(data, args.name)
    pid_file = data / "broker" / "mosquitto.pid"
    reloaded = False
    if pid_file.is_file():
        try:
            reload_broker(int(pid_file.read_text()))
            reloaded = True
        except (ValueError, LinesideError):
            pass
    note = "the running broker has reloaded its accounts" if reloaded else "no broker runs here now: it reads the accounts when it starts"
    if args.device_command == "add":
        ca = paths(data).certs / "ca.crt"
        role = "operator" if args.role == "operator" else "device"
        print(f"{role} {args.name} added{f' (line {args.line})' if args.line else ''}; {note}.")
        print(f"password (shown once, stored only as a hash): {password}")
        print(f"connect with TLS, user name and client id {args.name!r}, and trust the CA {ca}")
        print(f"ask on lineside/v1/ask/{args.name}; answers on lineside/v1/answer/{args.name} (MQTT 5 reply topics under it)")
    else:
        print(f"device {args.name} removed; {note}.")
    return 0


def _print_answer(ans: dict[str, Any], *, text_shown: bool = False) -> None:
    """The answer, its sources and how it was made; ``text_shown``: the streamed text already is the answer."""
    status = ans.get("status")
    if status in ("answered", "fallback"):
        if not (text_shown and status == "answered"):
            print(ans.get("answer", ""))
        for e in ans.get("evidence", []):
            print(f"  \u201c{e['text']}\u201d [{e['source']}]")
        if ans.get("reason"):
            print(f"  (why: {ans['reason']})")
        for i, s in enumerate(ans.get("sources", []), 1):
            print(f"  [{i}] {s['doc']}, {s['locator']} (score {s['score']:.2f})")
        if ans.get("latency_ms"):
            how = [status, *(["cached"] if ans.get("cached") else []), f"{ans['latency_ms'] / 1000:.1f} s"]
            how += [ans["model"]] if ans.get("model") else []
            print(f"  ({', '.join(how)})")
    else:
        err = ans.get("error") or {}
        print(f"{status}: {err.get('message', '')} [{err.get('code', '')}]", file=sys.stderr)


def cmd_ask(args: argparse.Namespace) -> int:
    """Ask one question over MQTT 5 and print the answer with its sources."""
    from lineside.client import ask

    req: dict[str, Any] = {"question": args.question}
    if args.line:
        req["line"] = args.line
    streamed: list[str] = []

    def show(delta: dict[str, Any]) -> None:
        if delta.get("delta"):
            streamed.append(delta["delta"])
            print(delta["delta"], end="", flush=True)
        if delta.get("final") and streamed:
            print(flush=True)

    on_delta = show if args.stream and not args.json else None
    try:
        ans = asyncio.run(ask(_conn(args), req, device=args.device, timeout_s=args.timeout, on_delta=on_delta))
    except TimeoutError:
        print(f"error: no answer within {args.timeout:g} s: is `lineside up` running?", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(ans, ensure_ascii=False, indent=2))
    else:
        _print_answer(ans, text_shown=bool(streamed))
    return 0 if ans.get("status") in ("answered", "fallback") else 1


def cmd_ingest(args: argparse.Namespace) -> int:
    """Send documents to the ingest service piecewise, with a progress bar per file; with --wait, report each one's result."""
    from lineside.client import ingest
    from lineside.text import MAX_DOCUMENT_MB

    max_mb = args.max_mb
    if max_mb is None:
        raw = os.environ.get("LINESIDE_INGEST_MAX_DOCUMENT_MB", str(MAX_DOCUMENT_MB))
        try:
            max_mb = float(raw)
        except ValueError:
            print(f"error: LINESIDE_INGEST_MAX_DOCUMENT_MB={raw!r} is not a number of MiB", file=sys.stderr)
            return 2
    if max_mb <= 0:
        print("error: the document size limit must be more than 0 MiB (--max-mb)", file=sys.stderr)
        return 2

    files: list[Path] = []
    for raw in args.paths:
        p = Path(raw)
        if p.is_dir():
            files.extend(sorted(x for x in p.rglob("*") if x.is_file()))
        elif p.is_file():
            files.append(p)
        else:
            print(f"error: {raw}: no such file or directory", file=sys.stderr)
            return 2

    # A bar redrawn in place on a terminal; a plain line per file when stderr is a log or a pipe.
    tty = sys.stderr.isatty()
    bar = [""]  # the bar currently on screen, redrawn after an event line is printed above it

    def mib(n: int) -> str:
        return f"{n / 2**20:.1f}"

    def progress(name: str, sent: int, size: int) -> None:
        done = sent >= size
        if not tty:
            if done:
                print(f"  sent      {name} ({mib(size)} MiB)", file=sys.stderr, flush=True)
            return
        if done:
            bar[0] = ""
            sys.stderr.write(f"\r\x1b[K  sent      {name} ({mib(size)} MiB)\n")
        else:
            width = 24
            filled = width * sent // size
            shown = name if len(name) <= 32 else name[:31] + "…"
            bar[0] = f"  sending   {shown:32} [{'#' * filled}{'.' * (width - filled)}] {mib(sent)}/{mib(size)} MiB {sent / size:4.0%}"
            sys.stderr.write("\r\x1b[K" + bar[0])
        sys.stderr.flush()

    def show(ev: dict[str, Any]) -> None:
        detail = f" ({ev['chunks']} chunks)" if ev.get("chunks") else ""
        reason = f": {ev['reason']}" if ev.get("reason") else ""
        if tty and bar[0]:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
        print(f"  {ev['stage']:9} {ev['doc']}{detail}{reason}", flush=True)
        if tty and bar[0]:
            sys.stderr.write(bar[0])
            sys.stderr.flush()

    results = asyncio.run(
        ingest(
            _conn(args),
            files,
            wait=args.wait,
            line=args.line,
            on_event=show if args.wait else None,
            on_progress=progress,
            timeout_s=args.timeout,
            max_bytes=int(max_mb * 2**20),
        )
    )
    failed = [n for n, ev in results.items() if ev["stage"] == "failed"]
    if not args.wait:
        for name in failed:
            print(f"failed: {name}: {results[name].get('reason', '')}", file=sys.stderr)
        print(f"sent {len(files) - len(failed)} document(s)")
        return 1 if failed else 0
    for name in failed:
        print(f"failed: {name}: {results[name].get('reason', '')}", file=sys.stderr)
    print(f"{len(results) - len(failed)} of {len(results)} document(s) searchable")
    return 1 if failed else 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Run a question set through the running system and print its figures."""
    from lineside.evaluation import load_questions, run, summary

    questions = load_questions(Path(args.questions))
    if args.docs:
        from lineside.client import ingest

        docs = sorted(p for p in Path(args.docs).iterdir() if p.is_file() and p.suffix != ".jsonl" and p.name != "README.md")
        asyncio.run(ingest(_conn(args), docs, wait=True))
    try:
        if args.retrieval_only:
            from lineside.coverage import ENV_PREFIX, CoverageSettings
            from lineside.evaluation import run_retrieval
            from lineside.settings import load

            cov = load(CoverageSettings, ENV_PREFIX)
            results = asyncio.run(run_retrieval(_conn(args), questions, top_k=args.top_k, settings=cov))
        else:
            results = asyncio.run(run(_conn(args), questions, device="eval"))
    except TimeoutError:
        print("error: a question got no answer in time: is `lineside up` running?", file=sys.stderr)
        return 2
    figures = summary(results, questions)
    if args.retrieval_only:
        figures.pop("fact_rate", None)  # nothing is generated in this mode
    if args.json:
        print(json.dumps({"summary": figures, "results": results}, ensure_ascii=False, indent=2))
        return 0
    for r in results:
        mark = "pass" if r["passed"] else "FAIL"
        why = "" if r["passed"] else f"  status={r['status']} missing={r['missing']} cited={r['cited'][:2]}"
        print(f"{r['id']:>5} {mark} {r['latency_ms']:7.0f} ms{why}")
    print()
    for key, value in figures.items():
        print(f"{key:22} {value:.3f}" if isinstance(value, float) else f"{key:22} {value}")
    return 0


def _kb_check(args: argparse.Namespace) -> int:
    """`kb check [--repair]`: compare the vector index with the stored chunks (docs/operations.md)."""
    from services.retriever import kbcheck

    directory = Path(_conn(args, as_admin=False).data_dir) / "index"
    try:
        report = kbcheck.repair(directory) if args.repair else kbcheck.check(directory)
    except LinesideError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{report.documents} document(s), {report.chunks} chunks stored, {report.vectors} in the vector index")
    for problem in report.problems:
        print(f"problem: {problem}")
    if report.ok:
        print("repaired: the vector index was rebuilt from the stored chunks; all agree" if args.repair else "ok: all agree")
        return 0
    if not args.repair:
        print("run `lineside kb check --repair` with the retriever stopped to rebuild the index from the stored chunks")
    return 1


def cmd_backup(args: argparse.Namespace) -> int:
    """Create, restore or list backups of the knowledge base, accounts and settings (docs/operations.md)."""
    import datetime

    from lineside import backup

    try:
        if args.backup_command == "create":
            data = Path(_conn(args, as_admin=False).data_dir)
            out, m = backup.create(data, Path(args.path), with_keys=args.with_keys)
            keys = "with private keys and service passwords: keep it safe" if m.with_keys else "without private keys"
            print(f"wrote {out}: {m.documents} document(s), {m.chunks} chunks, {len(m.members)} files, {keys}")
            return 0
        if args.backup_command == "restore":
            data = Path(_conn(args, as_admin=False).data_dir)
            m = backup.restore(Path(args.file), data, force=args.force)
            print(f"restored {m.documents} document(s), {m.chunks} chunks and {len(m.members)} files into {data}")
            if not m.with_keys:
                print("the backup held no private keys: `lineside up` makes new service passwords and, if needed, certificates")
            return 0
        rows = backup.listing(Path(args.dir))
    except LinesideError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path, found, why in rows:
        if found is None:
            print(f"{path.name}: {why}")
            continue
        when = datetime.datetime.fromtimestamp(found.created_at, datetime.UTC).strftime("%Y-%m-%d %H:%M")
        keys = ", with keys" if found.with_keys else ""
        size = path.stat().st_size / 2**20
        print(
            f"{path.name}: {when} UTC from {found.host}, Lineside {found.lineside}, {found.documents} document(s), "
            f"{found.chunks} chunks, {size:.1f} MiB{keys}"
        )
    if not rows:
        print(f"no backups (*{backup.SUFFIX}) in {args.dir}")
    return 0


def _kb_versions(args: argparse.Namespace) -> int:
    """`kb history DOC` and `kb rollback DOC [--to VERSION]`, answered by the running retriever."""
    import datetime

    from lineside.client import kb_versions

    def when(t: float) -> str:
        return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M")

    rollback = args.kb_command == "rollback"
    try:
        reply = asyncio.run(kb_versions(_conn(args), args.doc, rollback_to=(args.to or "") if rollback else None))
    except TimeoutError:
        print("error: the retriever did not answer: is `lineside up` running?", file=sys.stderr)
        return 2
    if reply.get("error"):
        print(f"error: {reply['error']}", file=sys.stderr)
        return 1
    if rollback:
        print(f"{args.doc}: version {reply['version'][:12]} is live again ({reply['chunks']} chunks)")
        return 0
    print(f"{'version':14} {'chunks':>6}  {'ingested (UTC)':16}  state")
    for v in reply["versions"]:
        state = "live" if v["live"] else f"replaced {when(v['replaced_at'])}"
        print(f"{v['version'][:12]:14} {v['chunks']:>6}  {when(v['ingested_at'])}  {state}")
    return 0


def cmd_kb(args: argparse.Namespace) -> int:
    """List, delete or check documents in the knowledge base."""
    import datetime

    from lineside.client import kb_delete, kb_list

    if args.kb_command == "check":
        return _kb_check(args)
    if args.kb_command in ("history", "rollback"):
        return _kb_versions(args)
    try:
        if args.kb_command == "list":
            docs = asyncio.run(kb_list(_conn(args)))
            if args.json:
                print(json.dumps(docs, ensure_ascii=False, indent=2))
                return 0
            print(f"{'document':60} {'chunks':>6}  {'version':12}  ingested (UTC)")
            for d in docs:
                when = datetime.datetime.fromtimestamp(d["ingested_at"], datetime.UTC).strftime("%Y-%m-%d %H:%M")
                print(f"{d['doc']:60} {d['chunks']:>6}  {d['version'][:12]}  {when}")
            print(f"{len(docs)} document(s), {sum(d['chunks'] for d in docs)} chunks")
            return 0
        ev = asyncio.run(kb_delete(_conn(args), args.doc))
    except TimeoutError:
        print("error: the retriever did not answer: is `lineside up` running?", file=sys.stderr)
        return 2
    if ev.get("stage") == "deleted":
        print(f"deleted {args.doc}")
        return 0
    print(f"error: {args.doc}: {ev.get('reason', 'not deleted')}", file=sys.stderr)
    return 1


def cmd_audit(args: argparse.Namespace) -> int:
    """Print the audit log (who asked what, and what they were told), or the knowledge-gap report."""
    from lineside import audit

    path = Path(_conn(args, as_admin=False).data_dir) / audit.FILE_NAME
    if not path.is_file():
        print(f"error: no audit log at {path}: the gateway starts it with its first answer (is --data right?)", file=sys.stderr)
        return 2
    since = audit.parse_since(args.since) if args.since else None
    log = audit.AuditLog(path)
    try:
        if args.what == "gaps":
            gaps = log.gaps(since=since)
            if args.json:
                print(json.dumps(msgspec.to_builtins(gaps), ensure_ascii=False, indent=2))
                return 0
            for g in gaps:
                print(f"{g.count:5}  {g.question}   ({', '.join(g.reasons)}; last {audit.iso(g.last_ts)})")
                for other in g.questions[1:]:
                    print(f"       also: {other}")
            print(f"{len(gaps)} question(s) the documents do not answer, {sum(g.count for g in gaps)} asked in all")
            return 0
        records = log.query(since=since, device=args.device, status=args.status, limit=args.limit)
    finally:
        log.close()
    if args.json:
        print(json.dumps(msgspec.to_builtins(records), ensure_ascii=False, indent=2))
    elif args.csv:
        sys.stdout.write(audit.to_csv(records))
    else:
        for r in records:
            why = f" ({r.reason})" if r.reason else ""
            print(f"{audit.iso(r.ts)}  {r.device or '-':16} {r.status}{why}  {r.latency_ms / 1000:.1f} s  {r.question}")
            if r.answer:
                print(f"    {' '.join(r.answer.split())[:200]}")
            for src in r.sources:
                print(f"    [{src.doc}, {src.locator}]")
        print(f"{len(records)} record(s)")
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    """Run Mosquitto in the foreground with the secure profile (what the systemd broker unit runs)."""
    from lineside import broker, units
    from lineside.security import registry, secure_broker
    from lineside.security.certs import box_names, certs_init
    from lineside.security.layout import paths

    data = Path(_conn(args, as_admin=False).data_dir)
    registry.ensure_services(data)
    conf = secure_broker.render_secure_config(
        data, args.tls_port, local_port=args.port, certs=certs_init(paths(data).certs, [*(args.host or ()), *box_names()])
    )
    (data / "broker" / units.SERVICE_ENV).write_text(f"LINESIDE_LLM_SHARE_GROUP={registry.share_group(data)}\n")
    (data / "broker" / "mosquitto.pid").write_text(str(os.getpid()))  # exec keeps the pid: `lineside device` reloads it
    mosquitto = broker.mosquitto_binary()
    os.execv(mosquitto, [mosquitto, "-c", str(conf)])  # noqa: S606 - a fixed argument list; replaces this process


def cmd_service(args: argparse.Namespace) -> int:
    """Write (or print) the systemd units that run Lineside at boot."""
    from lineside import units

    opts = units.UnitOptions(
        user=args.user,
        data_dir=Path(args.data).resolve() if args.data else units.DEFAULT_DATA_DIR,
        profile=args.profile,
        port=args.port,
        tls_port=args.tls_port,
        hosts=tuple(args.host or ()),
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
    )
    rendered = units.render(opts)
    if args.dry_run:
        for name, text in rendered.items():
            print(f"# ---- {name}\n{text}")
        return 0
    for path in units.install(rendered, Path(args.unit_dir)):
        print(f"wrote {path}")
    print(
        f"next: create the user and the data directory if needed (useradd --system --home {opts.data_dir} {opts.user}; "
        f"install -d -o {opts.user} -g {opts.user} -m 0750 {opts.data_dir}), then\n"
        f"  systemctl daemon-reload && systemctl enable --now {units.TARGET}"
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """One screen: services, versions, models, knowledge base, today's questions, last errors."""
    from lineside import status

    box = asyncio.run(status.gather(_conn(args), metrics_base=args.metrics_port or None, metrics_host=args.metrics_host))
    if args.json:
        print(json.dumps(msgspec.to_builtins(box), ensure_ascii=False, indent=2))
    else:
        print(status.render(box))
    return 0 if all(s.state == "online" for s in box.services) else 1


def cmd_models(args: argparse.Namespace) -> int:
    """Assemble and verify the LLM model file for the chosen profile."""
    env = dict(os.environ, LINESIDE_LLM_PROFILE=args.profile)
    return subprocess.call([sys.executable, "-m", "services.llm", "--install-model"], env=env)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `lineside` console script."""
    parser = argparse.ArgumentParser(prog="lineside", description="Offline shop-floor assistant over MQTT.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("up", help="start the broker and the four services")
    p.add_argument("--port", type=int, help="broker port (default LINESIDE_MQTT_PORT or 1883)")
    p.add_argument("--data", help="data directory (default LINESIDE_DATA_DIR)")
    p.add_argument(
        "--broker",
        choices=("local", "external"),
        default="local",
        help="start Mosquitto here (secure profile) or use one already running (its accounts: LINESIDE_MQTT_USERNAME/_PASSWORD_FILE)",
    )
    p.add_argument("--ingest", nargs="*", metavar="PATH", help="documents or folders to ingest once the services are up")
    p.add_argument(
        "--profile", choices=("tiny", "default", "large", "none"), help="model profile (default LINESIDE_LLM_PROFILE or default)"
    )
    p.add_argument("--no-llm", action="store_true", help="no language model: answers quote the best passage (profile none)")
    p.add_argument(
        "--llm-workers", type=int, default=1, metavar="N", help="llm processes sharing the questions (MQTT 5 shared subscription)"
    )
    p.add_argument(
        "--tls-port", type=int, default=8883, help="TLS listener for devices (default 8883); --port is the box's own loopback listener"
    )
    p.add_argument("--host", action="append", metavar="NAME", help="host name or address devices use for the box (in the TLS certificate)")
    p.add_argument(
        "--web-port",
        type=int,
        default=8443,
        metavar="N",
        help="HTTPS port of the web page for phones and tablets (default 8443; 0: no page)",
    )
    p.add_argument(
        "--no-auth", action="store_true", help="development only: anonymous plain MQTT on 127.0.0.1, no TLS listener, no accounts"
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=9810,
        metavar="N",
        help="Prometheus /metrics: gateway on N, retriever N+1, llm N+2, ingest N+3 (default 9810; 0: none)",
    )
    p.add_argument("--metrics-host", default="127.0.0.1", metavar="ADDR", help="address /metrics listens on (default 127.0.0.1)")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("certs", help="TLS certificates of the box")
    certs = p.add_subparsers(dest="certs_command", required=True)
    q = certs.add_parser("init", help="create the CA and the broker certificate (lineside up does this on first start)")
    q.add_argument(
        "--host",
        action="append",
        metavar="NAME",
        help="host name or address devices use for the box (repeat; with --force, every one the certificate must cover)",
    )
    q.add_argument("--force", action="store_true", help="issue a new server key and certificate (the CA is kept)")
    q.add_argument("--data", help="data directory (default LINESIDE_DATA_DIR)")
    q = certs.add_parser("show", help="the names the server certificate covers and the CA's fingerprint")
    q.add_argument("--json", action="store_true", help="as one JSON object")
    q.add_argument("--data", help="data directory (default LINESIDE_DATA_DIR)")
    q = certs.add_parser("export", help="write the CA certificate (no key) to a folder or USB stick, readable by every account")
    q.add_argument("directory", help="folder to write lineside-ca.crt into (created if missing)")
    q.add_argument("--data", help="data directory (default LINESIDE_DATA_DIR)")
    p.set_defaults(func=cmd_certs)

    data_dir = argparse.ArgumentParser(add_help=False)
    data_dir.add_argument("--data", help="data directory (default LINESIDE_DATA_DIR)")
    # `lineside user` is the same command: operators of the web page are device accounts with a role.
    for command, what in (("device", "device accounts: add, list, remove"), ("user", "the same as device (users of the web page)")):
        p = sub.add_parser(command, help=what)
        dev = p.add_subparsers(dest="device_command", required=True)
        q = dev.add_parser("add", parents=[data_dir], help="create a device account and print its password once")
        q.add_argument("name", help="device name: its user name, client id and topic level (e.g. hmi-3)")
        q.add_argument("--line", help="the device only ever searches this line's documents (plus plant-wide ones)")
        q.add_argument("--can-ingest", action="store_true", help="may send documents to the knowledge base")
        q.add_argument(
            "--role",
            choices=("device", "operator"),
            default="device",
            help="operator: may also send and delete documents from the web page's operator section",
        )
        q = dev.add_parser("list", parents=[data_dir], help="registered devices")
        q.add_argument("--json", action="store_true")
        q = dev.add_parser("remove", parents=[data_dir], help="delete a device account; it is refused from now on")
        q.add_argument("name")
        p.set_defaults(func=cmd_device)

    p = sub.add_parser("ask", help="ask a question and print the answer with its sources")
    p.add_argument("question")
    p.add_argument("--json", action="store_true", help="print the raw answer object")
    p.add_argument("--line", help="only this line's documents (plus plant-wide ones)")
    p.add_argument("--device", default="cli", help="device name used for the reply topic")
    p.add_argument("--stream", action="store_true", help="print the answer as it is generated, then its sources")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the answer")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("ingest", help="send documents (.md .txt .pdf .csv .xlsx .html .docx) to the knowledge base")
    p.add_argument("paths", nargs="+")
    p.add_argument("--wait", action="store_true", help="return when the documents are searchable; non-zero exit if any failed")
    p.add_argument("--line", help="tag every chunk of these documents with a production line")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait with --wait")
    p.add_argument(
        "--max-mb",
        type=float,
        metavar="MB",
        help="refuse larger files before sending them (default LINESIDE_INGEST_MAX_DOCUMENT_MB or 50, the service's limit)",
    )
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("eval", help="run a questions.jsonl set through the running system and print its figures")
    p.add_argument("questions", help="JSON Lines file in the format of ../shared/corpus-dev/questions.jsonl")
    p.add_argument("--docs", help="ingest this folder first")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--retrieval-only", action="store_true", help="no LLM: judge the retriever's passages and the fallback rule on them")
    p.add_argument("--top-k", type=int, default=5, help="passages per question in --retrieval-only mode (recall@k up to this)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("kb", help="list, delete, check or roll back documents in the knowledge base")
    kb = p.add_subparsers(dest="kb_command", required=True)
    q = kb.add_parser("list", help="documents with chunk counts and versions")
    q.add_argument("--json", action="store_true")
    q = kb.add_parser("delete", help="remove one document everywhere")
    q.add_argument("doc", help="document name as shown by `lineside kb list`")
    q = kb.add_parser("history", help="a document's versions: the live one and the earlier ones kept (time, sha256, chunks)")
    q.add_argument("doc", help="document name as shown by `lineside kb list`")
    q = kb.add_parser("rollback", help="make an earlier version of a document live again, in one step")
    q.add_argument("doc", help="document name as shown by `lineside kb list`")
    q.add_argument(
        "--to", metavar="VERSION", help="the version (first characters of its sha256, from `kb history`); default: the newest earlier one"
    )
    q = kb.add_parser("check", parents=[data_dir], help="do the vector index and the stored chunks agree (reads the data directory)")
    q.add_argument("--repair", action="store_true", help="rebuild the vector index from the stored chunks (stop the retriever first)")
    p.set_defaults(func=cmd_kb)

    p = sub.add_parser("backup", help="the knowledge base, accounts and settings in one file: create, restore, list")
    bk = p.add_subparsers(dest="backup_command", required=True)
    q = bk.add_parser("create", parents=[data_dir], help="write a backup (consistent while the box answers)")
    q.add_argument("path", help="a directory (a USB stick, a NAS folder) to write a new backup file in, or the file's name")
    q.add_argument("--with-keys", action="store_true", help="also the private keys and service passwords (a replacement box)")
    q = bk.add_parser("restore", parents=[data_dir], help="restore a backup into an empty data directory (stop lineside first)")
    q.add_argument("file", help="the backup file")
    q.add_argument("--force", action="store_true", help="restore into a non-empty data directory, replacing what the backup holds")
    q = bk.add_parser("list", help="the backups in a directory, newest first")
    q.add_argument("dir", help="a directory such as a USB stick or NAS folder")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("audit", help="who asked what and what they were told; `audit gaps`: what the documents do not answer")
    p.add_argument("what", nargs="?", choices=("gaps",), help="gaps: questions that fell back or were rejected, grouped, most asked first")
    p.add_argument("--since", help="from this date (2026-11-30, UTC), date and time, or span ago (7d, 12h)")
    p.add_argument("--device", help="only this device's questions")
    p.add_argument("--status", choices=("answered", "fallback", "rejected", "busy", "error"), help="only answers with this status")
    p.add_argument("--limit", type=int, help="only the most recent N records")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="JSON: every field of every record")
    out.add_argument("--csv", action="store_true", help="CSV with a header row (records only)")
    p.add_argument("--data", help="data directory (default LINESIDE_DATA_DIR)")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("broker", help="run Mosquitto in the foreground, secure profile (the systemd broker unit runs this)")
    p.add_argument("--port", type=int, default=1883, help="loopback listener of the services and the CLI (default 1883)")
    p.add_argument("--tls-port", type=int, default=8883, help="TLS listener for devices (default 8883)")
    p.add_argument("--host", action="append", metavar="NAME", help="host name or address devices use for the box (in the TLS certificate)")
    p.add_argument("--data", help="data directory (default LINESIDE_DATA_DIR)")
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("service", help="systemd units: run Lineside at boot with memory and CPU quotas")
    svc = p.add_subparsers(dest="service_command", required=True)
    q = svc.add_parser("install", help="write the units into /etc/systemd/system (or print them with --dry-run)")
    q.add_argument("--user", default="lineside", help="the account the services run as (default lineside)")
    q.add_argument("--data", help="data directory (default /var/lib/lineside)")
    q.add_argument("--profile", choices=("tiny", "default", "large", "none"), default=os.environ.get("LINESIDE_LLM_PROFILE", "default"))
    q.add_argument("--port", type=int, default=1883, help="broker loopback port (default 1883)")
    q.add_argument("--tls-port", type=int, default=8883, help="TLS port for devices (default 8883)")
    q.add_argument("--host", action="append", metavar="NAME", help="host name or address devices use for the box")
    q.add_argument("--metrics-port", type=int, default=9810, metavar="N", help="base port of /metrics (default 9810; 0: none)")
    q.add_argument("--metrics-host", default="127.0.0.1", metavar="ADDR")
    q.add_argument("--unit-dir", default="/etc/systemd/system", help="where the units go (default /etc/systemd/system)")
    q.add_argument("--dry-run", action="store_true", help="print the units instead of writing them")
    p.set_defaults(func=cmd_service)

    p = sub.add_parser("status", help="one screen: services, models, knowledge base, today's questions, last errors")
    p.add_argument("--json", action="store_true")
    p.add_argument("--port", type=int, help="broker port (default LINESIDE_MQTT_PORT or 1883)")
    p.add_argument("--data", help="data directory (default LINESIDE_DATA_DIR)")
    p.add_argument("--metrics-port", type=int, default=9810, metavar="N", help="base port of the services' /metrics (default 9810)")
    p.add_argument("--metrics-host", default="127.0.0.1", metavar="ADDR")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("models", help="assemble and verify the LLM model file (offline)")
    p.add_argument("--profile", default=os.environ.get("LINESIDE_LLM_PROFILE", "default"))
    p.set_defaults(func=cmd_models)

    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except LinesideError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
