"""LLM wiring: settings, model, service; and ``--install-model`` for ``lineside models``."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from lineside.errors import ModelError
from lineside.log import configure
from lineside.metrics import LlmMetrics
from lineside.runtime import ComputeThread, run
from lineside.settings import load
from services.llm.adapters import ChatModel, LlamaCpp
from services.llm.models import EXTRACTIVE, resolve
from services.llm.service import LlmService
from services.llm.service import worker_name as worker_name  # re-exported: tests import it from here
from services.llm.settings import LlmSettings

EXTRACTIVE_NAME = "extractive"


async def main() -> None:
    """Load the model, then answer generate requests one at a time until cancelled."""
    settings = load(LlmSettings, "LINESIDE_LLM_")
    log = configure("llm")
    t0 = time.perf_counter()
    compute = ComputeThread("llama")
    model: ChatModel | None = None
    if settings.profile == EXTRACTIVE and not settings.model:
        name = EXTRACTIVE_NAME
        log.info("ready", model=name, note="no language model: answers quote the best passage")
    else:
        path, name = await asyncio.to_thread(resolve, settings.profile, settings.model, settings.model_dir)
        model = await compute.run(LlamaCpp, path, name, threads=settings.threads, context=settings.context)
        log.info("ready", model=name, path=str(path), load_s=round(time.perf_counter() - t0, 2))
    metrics = LlmMetrics()
    metrics.set_model(name)
    metrics.serve_from_env(log)
    await LlmService(settings, model, name, compute, log, metrics=metrics).run()


def install_model() -> int:
    """Assemble and verify the configured profile's model file; print its path."""
    settings = load(LlmSettings, "LINESIDE_LLM_")
    if settings.profile == EXTRACTIVE and not settings.model:
        print("profile 'none': no model to install (answers quote the best passage)")
        return 0
    try:
        path, _ = resolve(settings.profile, settings.model, settings.model_dir)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m services.llm")
    parser.add_argument("--install-model", action="store_true", help="assemble and verify the model file, then exit")
    if parser.parse_args().install_model:
        sys.exit(install_model())
    try:
        run(main)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
