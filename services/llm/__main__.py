"""LLM wiring: settings, model, bus, one generation worker behind a bounded queue."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import msgspec

from lineside.bus import Bus, run_forever
from lineside.errors import ModelError
from lineside.log import configure
from lineside.runtime import Counters, decoded, run
from lineside.settings import load
from schemas import codec, topics
from schemas.messages import GenerateReply, GenerateRequest, LlmInbox
from services.llm.adapters import LlamaCpp
from services.llm.handlers import build_messages, focus, pack
from services.llm.models import resolve
from services.llm.settings import LlmSettings


async def main() -> None:
    """Load the model, then answer generate requests one at a time until cancelled."""
    settings = load(LlmSettings, "LINESIDE_LLM_")
    log = configure("llm")
    t0 = time.perf_counter()
    path, name = await asyncio.to_thread(resolve, settings.profile, settings.model, settings.model_dir)
    model = await asyncio.to_thread(LlamaCpp, path, name, threads=settings.threads, context=settings.context)
    log.info("ready", model=name, path=str(path), load_s=round(time.perf_counter() - t0, 2))
    decode = codec.decoder(LlmInbox)
    counters = Counters()

    async def reply(bus: Bus, req: GenerateRequest, rep: GenerateReply) -> None:
        if topics.is_valid_publish_topic(req.reply_to):
            await bus.publish(req.reply_to, codec.encode(rep))

    async def generate(bus: Bus, req: GenerateRequest) -> None:
        if req.deadline_unix is not None and time.time() > req.deadline_unix:
            log.info("expired", request_id=req.request_id)
            await reply(bus, req, GenerateReply(request_id=req.request_id, error="expired"))
            return
        t = time.perf_counter()
        try:
            focused = [msgspec.structs.replace(p, text=focus(req.question, p.text)) for p in req.passages]
            used = pack(focused, settings.context_budget, model.count_tokens)
            messages = build_messages(req.question, req.lang, [focused[i] for i in used])
            gen = await asyncio.to_thread(model.chat, messages, settings.max_tokens)
            rep = GenerateReply(
                request_id=req.request_id,
                text=gen.text,
                model=model.name,
                prompt_tokens=gen.prompt_tokens,
                completion_tokens=gen.completion_tokens,
                latency_ms=(time.perf_counter() - t) * 1000,
                used=used,
            )
        except Exception as exc:
            log.exception("generate_failed", request_id=req.request_id)
            rep = GenerateReply(request_id=req.request_id, model=model.name, error=f"generation failed: {exc}")
        await reply(bus, req, rep)
        log.info(
            "generated",
            request_id=req.request_id,
            prompt_tokens=rep.prompt_tokens,
            completion_tokens=rep.completion_tokens,
            latency_ms=round(rep.latency_ms, 1),
        )

    async def consume(bus: Bus) -> None:
        queue: asyncio.Queue[GenerateRequest] = asyncio.Queue(maxsize=settings.max_queue)

        async def dispatch() -> None:
            async for req in decoded(bus.messages(), decode, counters, log):
                try:
                    queue.put_nowait(req)
                except asyncio.QueueFull:
                    counters.inc("busy")
                    log.warning("busy", request_id=req.request_id, queued=queue.qsize())
                    await reply(bus, req, GenerateReply(request_id=req.request_id, model=model.name, error="busy"))

        async def worker() -> None:
            while True:
                await generate(bus, await queue.get())

        async with asyncio.TaskGroup() as tg:
            tg.create_task(dispatch(), name="dispatch")
            tg.create_task(worker(), name="generate")

    def make_bus() -> Bus:
        return Bus(settings, client_id=settings.client_id, service="llm", subscriptions=(topics.GENERATE,), persistent=True)

    await run_forever(make_bus, consume, lambda err, wait: log.warning("reconnecting", error=err, wait_s=round(wait, 2)))


def install_model() -> int:
    """Assemble and verify the configured profile's model file; print its path."""
    settings = load(LlmSettings, "LINESIDE_LLM_")
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
