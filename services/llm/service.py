"""The LLM service: owns the model, the answer cache and the generate queue, one method per kind of inbound message."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

from lineside.bus import Bus, run_forever
from lineside.metrics import LlmMetrics
from lineside.runtime import ComputeThread, Counters, decoded
from schemas import codec, topics
from schemas.messages import GenerateDelta, GenerateReply, GenerateRequest, LlmInbox
from services.llm.adapters import ChatModel, Generation
from services.llm.handlers import AnswerCache, Cached, build_messages, evidence, focus, pack, quote, quoted_sources
from services.llm.settings import LlmSettings

STREAM_INTERVAL_S = 0.1
"""Streamed text is sent at most ten times a second: smooth to read, and ~6x fewer messages than
one per token at ~60 tokens/s (each costs CPU in three processes on the cores the model uses)."""


def worker_name(client_id: str) -> str:
    """The name this worker reports its status under: 'llm' for the first, 'llm-2' for lineside-llm-2."""
    return client_id.removeprefix("lineside-") or "llm"


class LlmService:
    """Generate requests (``GenerateRequest``) answered one at a time by one model, or by quoting
    the best passage when there is no model (``model is None``, the extractive profile).

    Model calls run on one compute thread; requests wait in a bounded queue and are answered
    'busy' when it is full.
    """

    def __init__(
        self,
        settings: LlmSettings,
        model: ChatModel | None,
        name: str,
        compute: ComputeThread,
        log: Any,
        *,
        metrics: LlmMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.model = model
        self.name = name
        self.compute = compute
        self.log = log
        self.me = settings.client_id
        self.counters = Counters()
        self.cache = AnswerCache(settings.cache_size)
        self.queue: asyncio.Queue[GenerateRequest] = asyncio.Queue(maxsize=settings.max_queue)
        self.arrived: dict[str, float] = {}
        """When each queued request arrived (``time.monotonic()``), by request id."""
        self.inbox = topics.shared(settings.share_group, topics.GENERATE) if settings.share_group else topics.GENERATE
        self._decode = codec.decoder(LlmInbox)
        self.metrics = metrics or LlmMetrics()
        self.metrics.watch(self.counters)
        self.metrics.queue_depth.set_function(lambda: self.queue.qsize())  # the queue is replaced on each connection

    async def reply(self, bus: Bus, req: GenerateRequest, rep: GenerateReply) -> None:
        """Send ``rep`` to the asker, if it gave a topic that can be published to."""
        if topics.is_valid_publish_topic(req.reply_to):
            await bus.publish(req.reply_to, codec.encode(rep))

    async def on_message(self, bus: Bus, msg: LlmInbox) -> None:
        """Dispatch one inbound message by its type."""
        match msg:
            case GenerateRequest():
                await self.on_generate(bus, msg)

    async def on_generate(self, bus: Bus, req: GenerateRequest) -> None:
        """Queue a request for the model, or answer 'busy' at once when the queue is full."""
        try:
            self.queue.put_nowait(req)
            self.arrived[req.request_id] = time.monotonic()
        except asyncio.QueueFull:
            self.counters.inc("busy")
            self.metrics.requests.labels("busy").inc()
            self.log.warning("busy", request_id=req.request_id, queued=self.queue.qsize())
            await self.reply(bus, req, GenerateReply(request_id=req.request_id, model=self.name, error="busy", worker=self.me))

    async def _forward(self, bus: Bus, req: GenerateRequest, pieces: asyncio.Queue[str | None]) -> None:
        """Publish streamed text until ``None`` arrives.

        The first piece goes at once (time to first token); later ones are gathered for
        STREAM_INTERVAL_S, so the broker hops do not take CPU from the model token by token.
        """
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

    async def run_model(self, bus: Bus, req: GenerateRequest, messages: list[dict[str, str]]) -> Generation:
        """Generate, publishing each piece of text to the asker when it asked for a stream."""
        model = self.model
        assert model is not None
        if not (req.stream and topics.is_valid_publish_topic(req.reply_to)):
            return await self.compute.run(model.chat, messages, self.settings.max_tokens)
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        sender = asyncio.create_task(self._forward(bus, req, pieces))
        try:
            return await self.compute.run(
                model.chat, messages, self.settings.max_tokens, lambda d: loop.call_soon_threadsafe(pieces.put_nowait, d)
            )
        finally:
            pieces.put_nowait(None)
            await sender

    async def generate(self, bus: Bus, req: GenerateRequest) -> None:
        """Answer one request; a failed generation is answered with an error, never silence."""
        arrived = self.arrived.pop(req.request_id, time.monotonic())
        if req.deadline_unix is not None and time.time() > req.deadline_unix:
            self.log.info("expired", request_id=req.request_id)
            self.metrics.requests.labels("expired").inc()
            await self.reply(bus, req, GenerateReply(request_id=req.request_id, error="expired", worker=self.me))
            return
        t = time.perf_counter()
        cached = False
        model = self.model
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
                used = pack(focused, self.settings.context_budget, model.count_tokens)
                messages = build_messages(req.question, req.lang, [focused[i] for i in used])
                key = AnswerCache.key(model.name, messages, self.settings.max_tokens)
                hit = self.cache.get(key)
                if hit is not None:
                    # Served from the cache; "cached" to the asker only when the answer was there when
                    # the question arrived, not made while it waited behind the identical question.
                    cached = hit.stored_at <= arrived
                    self.metrics.cache_hits.inc()
                    gen = Generation(text=hit.text, prompt_tokens=hit.prompt_tokens, completion_tokens=hit.completion_tokens)
                    if req.stream and hit.text and topics.is_valid_publish_topic(req.reply_to):
                        await bus.publish(req.reply_to, codec.encode(GenerateDelta(request_id=req.request_id, seq=0, delta=hit.text)))
                else:
                    self.metrics.cache_misses.inc()
                    started = time.perf_counter()
                    gen = await self.run_model(bus, req, messages)
                    self.metrics.generated(time.perf_counter() - started, gen.ttft_ms / 1000, gen.completion_tokens)
                    self.cache.put(key, Cached(gen.text, gen.prompt_tokens, gen.completion_tokens, time.monotonic()))
                if not self.settings.quote_evidence or not gen.text.strip():  # "I don't know" stays alone: the gateway falls back
                    quotes = []
                used = quoted_sources(used, quotes)
            rep = GenerateReply(
                request_id=req.request_id,
                text=gen.text,
                model=self.name,
                prompt_tokens=gen.prompt_tokens,
                completion_tokens=gen.completion_tokens,
                latency_ms=(time.perf_counter() - t) * 1000,
                used=used,
                quotes=list(quotes) if model is not None else [],
                cached=cached,
                ttft_ms=gen.ttft_ms,
                worker=self.me,
            )
        except Exception as exc:
            self.log.exception("generate_failed", request_id=req.request_id)
            rep = GenerateReply(request_id=req.request_id, model=self.name, error=f"generation failed: {exc}", worker=self.me)
        await self.reply(bus, req, rep)
        self.metrics.requests.labels("failed" if rep.error else "answered").inc()
        self.log.info(
            "generated",
            request_id=req.request_id,
            prompt_tokens=rep.prompt_tokens,
            completion_tokens=rep.completion_tokens,
            latency_ms=round(rep.latency_ms, 1),
            ttft_ms=round(rep.ttft_ms, 1),
            cached=cached,
            stream=req.stream,
        )

    async def _dispatch(self, bus: Bus) -> None:
        async for msg in decoded(bus.messages(), self._decode, self.counters, self.log):
            await self.on_message(bus, msg)

    async def _worker(self, bus: Bus) -> None:
        while True:
            await self.generate(bus, await self.queue.get())

    async def consume(self, bus: Bus) -> None:
        """The dispatcher and the one generation worker, until cancelled or the connection is lost."""
        # A fresh queue per connection: requests still waiting when the connection was lost are
        # dropped with it rather than answered on the next connection.
        self.queue = asyncio.Queue(maxsize=self.settings.max_queue)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._dispatch(bus), name="dispatch")
            tg.create_task(self._worker(bus), name="generate")

    def make_bus(self) -> Bus:
        """The service's connection: persistent session, the (shared) generate inbox."""
        return Bus(self.settings, client_id=self.me, service=worker_name(self.me), subscriptions=(self.inbox,), persistent=True)

    async def run(self) -> None:
        """Serve until cancelled, reconnecting when the broker goes away."""
        await run_forever(self.make_bus, self.consume, self.metrics.on_reconnect(self.log))
