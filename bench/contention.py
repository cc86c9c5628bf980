"""Does a question being embedded slow a generation running on the same cores, and the reverse?

Runs llama.cpp (the default model, 2 threads) generating a fixed RAG-sized prompt in this
process, while a second process embeds questions with the retriever's embedding model at a fixed rate (as
the retriever does when other devices ask during a generation). Prints generation time and
embedding latency alone and together, for the embedder on 1 and on 2 threads.

    .venv/bin/python bench/contention.py [--rounds 6] [--rate 4]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # as the retriever service runs

PROMPT = [
    {"role": "system", "content": "You are a maintenance assistant in a factory. Answer the question using only the context."},
    {
        "role": "user",
        "content": "Context:\n\n"
        + "\n".join(f"Joint {i}: flange bolts M{8 + i % 6}, torque {20 + 5 * i} N·m, thread locker blue." for i in range(24))
        + "\n\nQuestion: What torque do the joint 7 flange bolts need?",
    },
]


def embedder(threads: int, rate: float, stop: mp.Event, ready: mp.Event, out: mp.Queue) -> None:
    """Embed one question every 1/rate seconds until stopped; report latencies."""
    from services.retriever.adapters import load_embedder

    model = load_embedder(threads)
    model.embed(["warm up"])
    ready.set()
    times = []
    i = 0
    while not stop.is_set():
        t = time.perf_counter()
        model.embed([f"What does fault E-{100 + i % 800} mean on the VX-90 filler?"])
        times.append((time.perf_counter() - t) * 1000)
        i += 1
        time.sleep(max(0.0, 1 / rate - (time.perf_counter() - t)))
    out.put(times)


def embed_alone(threads: int, n: int = 40) -> list[float]:
    """Embedding latency with nothing else running."""
    from services.retriever.adapters import load_embedder

    model = load_embedder(threads)
    model.embed(["warm up"])
    times = []
    for i in range(n):
        t = time.perf_counter()
        model.embed([f"What does fault E-{100 + i} mean on the VX-90 filler?"])
        times.append((time.perf_counter() - t) * 1000)
    return times


def main() -> int:
    """Print the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--rate", type=float, default=4.0, help="questions embedded per second during a generation")
    args = ap.parse_args()
    from services.llm.adapters import LlamaCpp
    from services.llm.models import resolve
    from services.llm.settings import LlmSettings

    s = LlmSettings()
    path, name = resolve("default", None, s.model_dir)
    llm = LlamaCpp(path, name, threads=2, context=2048)

    def generate() -> float:
        llm.forget()
        t = time.perf_counter()
        llm.chat(PROMPT, 64)
        return (time.perf_counter() - t) * 1000

    generate()
    alone = [generate() for _ in range(args.rounds)]
    print(f"{os.cpu_count()} cores; model {name}, 2 threads; embedding {args.rate:g} questions/s during generation")
    print(f"{'':44}{'p50 ms':>9}{'p95 ms':>9}   (generation: worst of --rounds instead of p95)")
    print(f"{'generation alone':44}{statistics.median(alone):9.0f}{max(alone):9.0f}")
    ctx = mp.get_context("spawn")
    for threads in (1, 2):
        e_alone = embed_alone(threads)
        stop, ready, out = ctx.Event(), ctx.Event(), ctx.Queue()
        proc = ctx.Process(target=embedder, args=(threads, args.rate, stop, ready, out))
        proc.start()
        ready.wait(120)
        together = [generate() for _ in range(args.rounds)]
        stop.set()
        e_together = out.get(timeout=60)
        proc.join(30)
        print(
            f"{f'embedding alone, {threads} thread(s)':44}{statistics.median(e_alone):9.1f}{sorted(e_alone)[int(0.95 * len(e_alone))]:9.1f}"
        )
        print(
            f"{f'embedding during generation, {threads} thread(s)':44}{statistics.median(e_together):9.1f}{sorted(e_together)[int(0.95 * len(e_together))]:9.1f}"
        )
        print(f"{f'generation during embedding, {threads} thread(s)':44}{statistics.median(together):9.0f}{max(together):9.0f}")
        print(f"  generation slowed by {statistics.median(together) / statistics.median(alone) - 1:+.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
