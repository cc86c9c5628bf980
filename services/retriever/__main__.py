"""Retriever wiring: settings, embedding model, index, service."""

from __future__ import annotations

import os

# FAISS's OpenMP threads spin for a while after each parallel region (libgomp: 300,000 rounds);
# on a 2-core box that spin steals the cores llama.cpp is about to use for the answer. A short
# spin (ten thousand rounds, a few microseconds) keeps search fast without that (bench/retrieval_100k.py).
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import time
from pathlib import Path

from lineside.durable import DurableQueue
from lineside.log import configure
from lineside.metrics import RetrieverMetrics
from lineside.runtime import ComputeThread, run
from lineside.settings import load
from services.retriever.adapters import Index, load_embedder
from services.retriever.handlers import vector_space
from services.retriever.service import Retriever
from services.retriever.settings import RetrieverSettings


async def main() -> None:
    """Load the model and index, then serve searches and index updates until cancelled."""
    settings = load(RetrieverSettings, "LINESIDE_RETRIEVER_")
    log = configure("retriever")
    t0 = time.perf_counter()
    compute = ComputeThread("embed")
    embedder = await compute.run(load_embedder, settings.threads, settings.batch_size)
    index = Index(
        Path(settings.data_dir) / "index", dim=embedder.dim, model=vector_space(embedder.name), keep_versions=settings.keep_versions
    )
    log.info("ready", chunks=len(index), docs=len(index.documents()), model=embedder.name, load_s=round(time.perf_counter() - t0, 2))
    try:
        metrics = RetrieverMetrics(Path(settings.data_dir) / "index")
        metrics.set_model(embedder.name)
        metrics.serve_from_env(log)
        pending = DurableQueue(Path(settings.data_dir) / "index" / "updates.sqlite3")
        try:
            await Retriever(settings, embedder, index, compute, log, metrics=metrics, pending=pending).run()
        finally:
            pending.close()
    finally:
        index.close()


if __name__ == "__main__":
    run(main)
