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
from lineside.runtime import ComputeThread, Counters, decoded, run
from lineside.settings import load
from schemas import codec, topics
from schemas.messages import GenerateDelta, GenerateReply, GenerateRequest, LlmInbox
from services.llm.adapters import ChatModel, Generation, LlamaCpp
from services.llm.handlers import AnswerCache, Cached, build_messages, evidence, focus, pack, quote, quoted_sources
from services.llm.models import EXTRACTIVE, resolve
from services.llm.settings import LlmSettings

EXTRACTIVE_NAME = "extractive"
STREAM_INTERVAL_S = 0.1
"""Streamed text is sent at most ten times a second: smooth to read, and ~6x fewer messages than
one per token at ~60 tokens/s (each costs CPU in three processes on the cores the model uses)."""


def worker_name(client_id: str) -> str:
    """The name this worker reports its status under: 'llm' for the first, 'llm-2' for lineside-llm-2."""
    return client_id.removeprefix("lineside-") or "llm"


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
    decode = codec.decoder(LlmInbox)
    counters = Counters()
    cache = AnswerCache(settings.cache_size)
    me = settings.client_id

    async def reply(bus: Bus, req: GenerateRequest, rep: GenerateReply) -> None:
        if topics.is_valid_publish_topic(req.reply_to):
            await bus.publish(req.reply_to, codec.encode(rep))

    async def run_model(bus: Bus, req: GenerateRequest, messages: list[dict[str, str]]) -> Generation:
        """Generate, publishing each piece of text to the asker when it asked for a stream."""
        assert model is not None
        if not (req.stream and topics.is_valid_publish_topic(req.reply_to)):
            return await compute.run(model.chat, messages, settings.max_tokens)
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()

        async def forward() -> None:
            # The first piece goes at once (time to first token); later ones are gathered for
            # STREAM_INTERVAL_S, so the broker hops do not take CPU from the model token by token.
            seq = 0
            done = False
            while not done:
                first = await pieces.get()
                if first is None:
                    break
                text = [first]
                while not pieces.empty():
                    nxt = pieces.get_nowait()
                    if nxt is None:
                        done = True
                        break
                    text.append(nxt)
                await bus.publish(req.reply_to, codec.encode(GenerateDelta(request_id=req.request_id, seq=seq, delta="".join(text))))
                seq += 1
                if not done:
                    await asyncio.sleep(STREAM_INTERVAL_S)

        sender = asyncio.create_task(forward())
        try:
            return await compute.run(model.chat, messages, settings.max_tokens, lambda d: loop.call_soon_threadsafe(pieces.put_nowait, d))
        finally:
            pieces.put_nowait(None)
            await sender

    async def generate(bus: Bus, req: GenerateRequest) -> None:
        if req.deadline_unix is not None and time.time() > req.deadline_unix:
            log.info("expired", request_id=req.request_id)
            await reply(bus, req, GenerateReply(request_id=req.request_id, error="expired", worker=me))
            return
        t = time.perf_counter()
        cached = False
        try:
            # A passage found for one ask of a multi-part question shows the lines about that ask.
            focused = [msgspec.structs.replace(p, text=focus(p.ask or req.question, p.text)) for p in req.passages]
            quotes = evidence(req.question, focused)
            if model is None:
                used = quoted_sources([], quotes)
                text = quote(quotes, used)
                gen = Generation(text=text, prompt_tokens=0, completion_tokens=0)
                if req.stream and text and topics.is_valid_publish_topic(req.reply_to):
                    await bus.publish(req.reply_to, codec.encode(GenerateDelta(request_id=req.request_id, seq=0, delta=text)))
            else:
                used = pack(focused, settings.context_budget, model.count_tokens)
                messages = build_messages(req.question, req.lang, [focused[i] for i in used])
                key = AnswerCache.key(model.name, messages, settings.max_tokens)
                hit = cache.get(key)
                if hit is not None:
                    cached = True
                    gen = Generation(text=hit.text, prompt_tokens=hit.prompt_tokens, completion_tokens=hit.completion_tokens)
                    if req.stream and hit.text and topics.is_valid_publish_topic(req.reply_to):
                        await bus.publish(req.reply_to, codec.encode(GenerateDelta(request_id=req.request_id, seq=0, delta=hit.text)))
                else:
                    gen = await run_model(bus, req, messages)
                    cache.put(key, Cached(gen.text, gen.prompt_tokens, gen.completion_tokens))
                if not settings.quote_evidence or not gen.text.strip():  # "I don't know" stays alone: the gateway falls back
                    quotes = []
                used = quoted_sources(used, quotes)
            rep = GenerateReply(
                request_id=req.request_id,
                text=gen.text,
                model=name,
                prompt_tokens=gen.prompt_tokens,
                completion_tokens=gen.completion_tokens,
                latency_ms=(time.perf_counter() - t) * 1000,
                used=used,
                quotes=list(quotes) if model is not None else [],
                cached=cached,
                ttft_ms=gen.ttft_ms,
                worker=me,
            )
        except Exception as exc:
            log.exception("generate_failed", request_id=req.request_id)
            rep = GenerateReply(request_id=req.request_id, model=name, error=f"generation failed: {exc}", worker=me)
        await reply(bus, req, rep)
        log.info(
            "generated",
            request_id=req.request_id,
            prompt_tokens=rep.prompt_tokens,
            completion_tokens=rep.completion_tokens,
            latency_ms=round(rep.latency_ms, 1),
            ttft_ms=round(rep.ttft_ms, 1),
            cached=cached,
            stream=req.stream,
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
                    await reply(bus, req, GenerateReply(request_id=req.request_id, model=name, error="busy", worker=me))

        async def worker() -> None:
            while True:
                await generate(bus, await queue.get())

        async with asyncio.TaskGroup() as tg:
            tg.create_task(dispatch(), name="dispatch")
            tg.create_task(worker(), name="generate")

    inbox = topics.shared(settings.share_group, topics.GENERATE) if settings.share_group else topics.GENERATE

    def make_bus() -> Bus:
        return Bus(settings, client_id=me, service=worker_name(me), subscriptions=(inbox,), persistent=True)

    await run_forever(make_bus, consume, lambda err, wait: log.warning("reconnecting", error=err, wait_s=round(wait, 2)))


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
