"""Question-path benchmark: end-to-end latency through the broker vs the same prompts straight into llama.cpp.

Starts Mosquitto and the four services on a free port with a temporary data directory,
ingests the dev corpus (../shared/corpus-dev, or examples/ when it is absent), and then:

1. asks every question in turn over MQTT 5 with streaming on, timing the first piece of text
   (time to first token as the asker sees it) and the full answer;
2. asks the answered questions again: the answer cache serves them;
3. restarts the llm service (empty cache) and measures throughput in questions per minute
   with 1, 2 and 8 concurrent askers (same question mix, cache off);
4. reads each process's peak resident memory (VmHWM) before stopping everything;
5. with the services stopped, rebuilds each answered question's exact prompt in-process (same
   index, same retrieval, same packing) and times llama.cpp alone on it, and measures time to
   first token with the fixed system prefix reused from the KV cache and with the cache cleared.

    .venv/bin/python bench/question_path.py [--questions FILE] [--docs DIR] [--limit N] [--throughput N]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lineside import broker as broker_mod  # noqa: E402
from lineside.client import Asker, ingest, wait_online  # noqa: E402
from lineside.evaluation import load_questions, run  # noqa: E402
from lineside.settings import Connection, default_model_dir  # noqa: E402
from lineside.supervisor import SERVICES, Supervisor  # noqa: E402

CONCURRENCY = (1, 2, 8)


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size of a live process (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def throughput(conn: Connection, questions: list[dict], askers: int) -> tuple[float, int]:
    """Questions per minute when ``askers`` devices ask the questions between them, each waiting for
    its answer before asking the next; returns (questions/minute, answers that were not answered/fallback)."""
    todo = list(questions)
    bad = 0

    async def device(i: int) -> None:
        nonlocal bad
        async with Asker(conn, device=f"bench-{i}") as asker:
            while todo:
                q = todo.pop()
                ans = await asker.ask({"question": q["question"]}, timeout_s=600)
                bad += ans["status"] not in ("answered", "fallback")

    t = time.perf_counter()
    await asyncio.gather(*(device(i) for i in range(askers)))
    return len(questions) / (time.perf_counter() - t) * 60, bad


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))] if s else float("nan")


def main() -> int:
    """Run the benchmark and print the figures."""
    corpus = ROOT.parent / "shared" / "corpus-dev"
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--questions", type=Path, default=corpus / "questions.jsonl" if corpus.exists() else ROOT / "examples" / "questions.jsonl"
    )
    ap.add_argument("--docs", type=Path, default=corpus if corpus.exists() else ROOT / "examples" / "docs")
    ap.add_argument("--limit", type=int, default=0, help="ask only the first N questions")
    ap.add_argument("--throughput", type=int, default=24, help="questions per throughput run (0: skip)")
    args = ap.parse_args()
    questions = load_questions(args.questions)[: args.limit or None]
    docs = sorted(p for p in args.docs.iterdir() if p.is_file() and p.suffix != ".jsonl" and p.name != "README.md")
    data = Path(tempfile.mkdtemp(prefix="lineside-bench-"))
    conn = Connection(mqtt_port=broker_mod.free_port(), data_dir=str(data))
    sup = Supervisor(conn, external_broker=False)
    e2e: dict[str, float] = {}
    ttft: dict[str, float] = {}
    statuses: dict[str, str] = {}
    passed = 0
    cached_ms: list[float] = []
    rates: dict[int, tuple[float, int]] = {}
    rss: dict[str, float] = {}
    try:
        sup.start()
        if asyncio.run(wait_online(conn, SERVICES, 300)) != set(SERVICES):
            print("services did not come online; see", sup.logs, file=sys.stderr)
            return 1
        t = time.perf_counter()
        asyncio.run(ingest(conn, docs, wait=True))
        print(f"ingested {len(docs)} documents in {time.perf_counter() - t:.1f} s", flush=True)
        for r in asyncio.run(run(conn, questions, device="bench", stream=True)):
            e2e[r["id"]] = r["latency_ms"]
            statuses[r["id"]] = r["status"]
            passed += r["passed"]
            if "ttft_ms" in r and r["status"] == "answered":
                ttft[r["id"]] = r["ttft_ms"]
        again = [q for q in questions if statuses.get(q["id"]) == "answered"]
        cached_ms = [r["latency_ms"] for r in asyncio.run(run(conn, again, device="bench-again"))]
        if args.throughput:
            mix = (questions * (1 + args.throughput // max(1, len(questions))))[: args.throughput]
            for n in CONCURRENCY:
                llm = sup.procs["llm"]
                llm.terminate()  # a fresh llm service: empty answer cache
                try:
                    llm.wait(30)
                except subprocess.TimeoutExpired:
                    llm.send_signal(signal.SIGUSR1)  # its stacks go to llm.log
                    time.sleep(1.0)
                    llm.kill()
                    print(f"llm did not stop within 30 s of SIGTERM; stacks in {sup.logs / 'llm.log'}", flush=True)
                sup.start_service("llm")
                asyncio.run(wait_online(conn, SERVICES, 300))
                time.sleep(2.0)
                rates[n] = asyncio.run(throughput(conn, mix, n))
                print(f"throughput with {n} askers: {rates[n][0]:.1f} questions/min", flush=True)
        rss = {name: peak_rss_mb(p.pid) for name, p in sup.procs.items()}
        if sup.broker is not None:
            rss["mosquitto"] = peak_rss_mb(sup.broker.pid)
    finally:
        sup.stop()

    # The same prompts, straight into llama.cpp, in the same order (so prompt-cache reuse matches).
    import msgspec

    from lineside.text import language
    from services.llm.adapters import LlamaCpp
    from services.llm.handlers import build_messages, focus, pack
    from services.llm.models import resolve
    from services.llm.settings import LlmSettings
    from services.retriever.adapters import Index, load_embedder
    from services.retriever.search import search

    llm_s = LlmSettings(model_dir=os.environ.get("LINESIDE_LLM_MODEL_DIR", default_model_dir()))
    path, name = resolve(os.environ.get("LINESIDE_LLM_PROFILE", "default"), os.environ.get("LINESIDE_LLM_MODEL"), llm_s.model_dir)
    model = LlamaCpp(path, name, threads=llm_s.threads, context=llm_s.context)
    embedder = load_embedder(1)
    index = Index(data / "index", dim=embedder.dim, model=embedder.name)
    prompts = {}
    for q in questions:
        if statuses.get(q["id"]) != "answered":
            continue
        # As the services do: the retriever's search (ask by ask for a multi-part question), the
        # LLM's lines of each passage by its ask or the question.
        found = search(index, lambda text, e=embedder: e.embed([text])[0], q["question"], 4, 32, today=dt.date.today())
        focused = [msgspec.structs.replace(p, text=focus(p.ask or q["question"], p.text)) for p in found.passages]
        used = pack(focused, llm_s.context_budget, model.count_tokens)
        prompts[q["id"]] = build_messages(q["question"], language(q["question"]), [focused[i] for i in used])
    index.close()
    del embedder
    time.sleep(1.0)  # let the embedder's BLAS threads go idle: they must not compete with llama.cpp's
    direct: dict[str, float] = {}
    direct_ttft: dict[str, float] = {}
    for qid, messages in prompts.items():
        t = time.perf_counter()
        gen = model.chat(messages, llm_s.max_tokens)
        direct[qid] = (time.perf_counter() - t) * 1000
        direct_ttft[qid] = gen.ttft_ms
    # Time to first token with the fixed system text still in llama.cpp's KV cache (the previous
    # prompt shares it) and with the cache cleared before each prompt.
    warm_ttft, cold_ttft = [], []
    for messages in prompts.values():
        warm_ttft.append(model.chat(messages, 1).ttft_ms)
        model.forget()
        cold_ttft.append(model.chat(messages, 1).ttft_ms)

    # What the LLM service itself measured for each generation in the system run.
    generated: dict[str, float] = {}
    for line in (data / "logs" / "llm.log").read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == "generated" and rec["request_id"].startswith("bench/"):
            generated.setdefault(rec["request_id"].split("/", 1)[-1], rec["latency_ms"])

    answered = list(direct)
    sys_ms = [e2e[k] for k in answered]
    raw_ms = [direct[k] for k in answered]
    overhead = [e2e[k] - generated[k] for k in answered if k in generated]
    fallback_ms = [e2e[k] for k, s in statuses.items() if s == "fallback"]
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, model {name}")
    print(
        f"questions: {len(questions)}, answered {len(answered)}, fallback {len(fallback_ms)}, passed {passed} ({passed / len(questions):.0%})"
    )
    print(f"{'':34}{'p50 ms':>10}{'p95 ms':>10}")
    print(f"{'end to end via broker (answered)':34}{statistics.median(sys_ms):10.0f}{pct(sys_ms, 0.95):10.0f}")
    e2e_ttft = [ttft[k] for k in answered if k in ttft]
    if e2e_ttft:
        print(f"{'  time to first token (streamed)':34}{statistics.median(e2e_ttft):10.0f}{pct(e2e_ttft, 0.95):10.0f}")
    raw_ttft = [direct_ttft[k] for k in answered]
    print(f"{'  llama.cpp in-process first token':34}{statistics.median(raw_ttft):10.0f}{pct(raw_ttft, 0.95):10.0f}")
    print(f"{'first token, system prefix cached':34}{statistics.median(warm_ttft):10.0f}{pct(warm_ttft, 0.95):10.0f}")
    print(f"{'first token, KV cache cleared':34}{statistics.median(cold_ttft):10.0f}{pct(cold_ttft, 0.95):10.0f}")
    if cached_ms:
        print(f"{'same question again (answer cache)':34}{statistics.median(cached_ms):10.0f}{pct(cached_ms, 0.95):10.0f}")
    print(f"{'llama.cpp in-process, same prompt':34}{statistics.median(raw_ms):10.0f}{pct(raw_ms, 0.95):10.0f}")
    gen_ms = [generated[k] for k in answered if k in generated]
    print(f"{'generation inside the llm service':34}{statistics.median(gen_ms):10.0f}{pct(gen_ms, 0.95):10.0f}")
    print(f"{'pipeline cost (e2e - generation)':34}{statistics.median(overhead):10.0f}{pct(overhead, 0.95):10.0f}")
    if fallback_ms:
        print(f"{'fallback answers (no LLM)':34}{statistics.median(fallback_ms):10.0f}{pct(fallback_ms, 0.95):10.0f}")
    ratio = statistics.median(sys_ms) / statistics.median(raw_ms)
    share = statistics.median(overhead) / statistics.median(sys_ms)
    print(f"ratio end-to-end / llama.cpp (medians): {ratio:.3f}; pipeline share of end-to-end: {share:.1%}")
    if e2e_ttft:
        print(f"ratio first token end-to-end / in-process (medians): {statistics.median(e2e_ttft) / statistics.median(raw_ttft):.3f}")
    for n, (rate, bad) in rates.items():
        print(
            f"throughput, {n} concurrent asker(s), {args.throughput} questions of the same mix: {rate:.1f} questions/min ({bad} not answered)"
        )
    if rss:
        print("peak RSS (VmHWM) MiB: " + ", ".join(f"{k} {v:.0f}" for k, v in rss.items()) + f"; sum {sum(rss.values()):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
