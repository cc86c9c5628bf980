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

from lineside.errors import LinesideError
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
    )


def cmd_certs(args: argparse.Namespace) -> int:
    """Create the box's CA and the broker's server certificate (or cover more host names)."""
    from lineside.security.certs import certs_init
    from lineside.security.layout import paths

    data = Path(_conn(args, as_admin=False).data_dir)
    certs = certs_init(paths(data).certs, tuple(args.host or ()), force=args.force)
    print(f"CA certificate (give it to every device): {certs.ca_cert}")
    print(f"server certificate: {certs.server_cert} (restart `lineside up` to use a new one)")
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
            print(json.dumps([{"name": d.name, "line": d.line, "can_ingest": d.can_ingest} for d in devices], indent=2))
            return 0
        print(f"{'device':32} {'line':12} can ingest")
        for d in devices:
            print(f"{d.name:32} {d.line or '(all)':12} {'yes' if d.can_ingest else 'no'}")
        print(f"{len(devices)} device(s)")
        return 0
    if args.device_command == "add":
        password = add_device(data, args.name, line=args.line, can_ingest=args.can_ingest)
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
        print(f"device {args.name} added{f' (line {args.line})' if args.line else ''}; {note}.")
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


def cmd_kb(args: argparse.Namespace) -> int:
    """List or delete documents in the knowledge base."""
    import datetime

    from lineside.client import kb_delete, kb_list

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
        "--no-auth", action="store_true", help="development only: anonymous plain MQTT on 127.0.0.1, no TLS listener, no accounts"
    )
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
    q.add_argument("--force", action="store_true", help="issue a new server certificate (the CA is kept) to cover new hosts")
    q.add_argument("--data", help="data directory (default LINESIDE_DATA_DIR)")
    p.set_defaults(func=cmd_certs)

    p = sub.add_parser("device", help="device accounts: add, list, remove")
    dev = p.add_subparsers(dest="device_command", required=True)
    data_dir = argparse.ArgumentParser(add_help=False)
    data_dir.add_argument("--data", help="data directory (default LINESIDE_DATA_DIR)")
    q = dev.add_parser("add", parents=[data_dir], help="create a device account and print its password once")
    q.add_argument("name", help="device name: its user name, client id and topic level (e.g. hmi-3)")
    q.add_argument("--line", help="the device only ever searches this line's documents (plus plant-wide ones)")
    q.add_argument("--can-ingest", action="store_true", help="may send documents to the knowledge base")
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

    p = sub.add_parser("kb", help="list or delete documents in the knowledge base")
    kb = p.add_subparsers(dest="kb_command", required=True)
    q = kb.add_parser("list", help="documents with chunk counts and versions")
    q.add_argument("--json", action="store_true")
    q = kb.add_parser("delete", help="remove one document everywhere")
    q.add_argument("doc", help="document name as shown by `lineside kb list`")
    p.set_defaults(func=cmd_kb)

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
