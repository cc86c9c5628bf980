"""Question-path benchmark: end-to-end latency through the broker vs the same prompts straight into llama.cpp.

Starts Mosquitto and the four services on a free port with a temporary data directory,
ingests the dev corpus (../shared/corpus-dev, or examples/ when it is absent), asks every
question in turn over MQTT 5 and times it. Then, with the services stopped, it rebuilds
each answered question's exact prompt in-process (same index, same retrieval, same packing)
and times llama.cpp alone on it. The difference is what the pipeline costs: broker hops,
encoding, embedding and search.

    .venv/bin/python bench/question_path.py [--questions FILE] [--docs DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lineside import broker as broker_mod  # noqa: E402
from lineside.client import ingest, wait_online  # noqa: E402
from lineside.evaluation import load_questions, run  # noqa: E402
from lineside.settings import Connection, default_model_dir  # noqa: E402
from lineside.supervisor import SERVICES, Supervisor  # noqa: E402


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
    args = ap.parse_args()
    questions = load_questions(args.questions)[: args.limit or None]
    docs = sorted(p for p in args.docs.iterdir() if p.is_file() and p.suffix != ".jsonl" and p.name != "README.md")
    data = Path(tempfile.mkdtemp(prefix="lineside-bench-"))
    conn = Connection(mqtt_port=broker_mod.free_port(), data_dir=str(data))
    sup = Supervisor(conn, external_broker=False)
    e2e: dict[str, float] = {}
    statuses: dict[str, str] = {}
    passed = 0
    try:
        sup.start()
        if asyncio.run(wait_online(conn, SERVICES, 300)) != set(SERVICES):
            print("services did not come online; see", sup.logs, file=sys.stderr)
            return 1
        t = time.perf_counter()
        asyncio.run(ingest(conn, docs, wait=True))
        print(f"ingested {len(docs)} documents in {time.perf_counter() - t:.1f} s")
        for r in asyncio.run(run(conn, questions, device="bench")):
            e2e[r["id"]] = r["latency_ms"]
            statuses[r["id"]] = r["status"]
            passed += r["passed"]
    finally:
        sup.stop()

    # The same prompts, straight into llama.cpp, in the same order (so prompt-cache reuse matches).
    import msgspec

    from services.llm.adapters import LlamaCpp
    from services.llm.handlers import build_messages, focus, is_chinese, pack
    from services.llm.models import resolve
    from services.llm.settings import LlmSettings
    from services.retriever.adapters import Index, MiniLM
    from services.retriever.search import hybrid_search

    llm_s = LlmSettings(model_dir=os.environ.get("LINESIDE_LLM_MODEL_DIR", default_model_dir()))
    path, name = resolve(os.environ.get("LINESIDE_LLM_PROFILE", "default"), os.environ.get("LINESIDE_LLM_MODEL"), llm_s.model_dir)
    model = LlamaCpp(path, name, threads=llm_s.threads, context=llm_s.context)
    embedder = MiniLM(2)
    index = Index(data / "index")
    prompts = {}
    for q in questions:
        if statuses.get(q["id"]) != "answered":
            continue
        vec = embedder.embed([q["question"]])[0]
        found = hybrid_search(index, vec, q["question"], 4, 32)
        focused = [msgspec.structs.replace(p, text=focus(q["question"], p.text)) for p in found.passages]
        used = pack(focused, llm_s.context_budget, model.count_tokens)
        prompts[q["id"]] = build_messages(q["question"], "zh" if is_chinese(q["question"]) else "en", [focused[i] for i in used])
    index.close()
    del embedder
    time.sleep(1.0)  # let torch's worker threads go idle: they must not compete with llama.cpp's
    direct: dict[str, float] = {}
    for qid, messages in prompts.items():
        t = time.perf_counter()
        model.chat(messages, llm_s.max_tokens)
        direct[qid] = (time.perf_counter() - t) * 1000

    # What the LLM service itself measured for each generation in the system run.
    generated: dict[str, float] = {}
    for line in (data / "logs" / "llm.log").read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == "generated":
            generated[rec["request_id"].split("/", 1)[-1]] = rec["latency_ms"]

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
    print(f"{'llama.cpp in-process, same prompt':34}{statistics.median(raw_ms):10.0f}{pct(raw_ms, 0.95):10.0f}")
    gen_ms = [generated[k] for k in answered if k in generated]
    print(f"{'generation inside the llm service':34}{statistics.median(gen_ms):10.0f}{pct(gen_ms, 0.95):10.0f}")
    print(f"{'pipeline cost (e2e - generation)':34}{statistics.median(overhead):10.0f}{pct(overhead, 0.95):10.0f}")
    if fallback_ms:
        print(f"{'fallback answers (no LLM)':34}{statistics.median(fallback_ms):10.0f}{pct(fallback_ms, 0.95):10.0f}")
    ratio = statistics.median(sys_ms) / statistics.median(raw_ms)
    share = statistics.median(overhead) / statistics.median(sys_ms)
    print(f"ratio end-to-end / llama.cpp (medians): {ratio:.3f}; pipeline share of end-to-end: {share:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
