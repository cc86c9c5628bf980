"""The gateway service: the device-facing side; owns the questions in flight and the services' availability."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import structlog

from lineside import coverage
from lineside.bus import Bus, BusError, Inbound, Replies, run_forever
from lineside.errors import LinesideError
from lineside.runtime import Counters, describe_decode_error
from schemas import codec, topics
from schemas.codec import BadRequest
from schemas.messages import (
    Answer,
    AskRequest,
    GatewayInbox,
    GenerateDelta,
    GenerateReply,
    GenerateRequest,
    RetrieveReply,
    RetrieveRequest,
    StreamDelta,
)
from services.gateway import handlers as h
from services.gateway.devices import DeviceLines
from services.gateway.settings import GatewaySettings

LLM_DOWN = (
    "the language model service is offline, so no answer was written; the documents that match are listed as sources. "
    "Tell the box's operator (lineside up restarts a service that dies; its log is in the data directory's logs/)"
)


class ServiceDownError(LinesideError):
    """A service went offline while a request waited for it."""


def request_id_quietly(m: Inbound) -> str:
    """The request id of a question that is refused before it is handled (best effort)."""
    try:
        req: AskRequest | None = codec.decode_ask(m.payload, m.content_type)
    except BadRequest as exc:
        return exc.request_id or h.request_id_of(None, m.correlation_data)
    return h.request_id_of(req, m.correlation_data)


class Stream:
    """A streamed question in flight: where its pieces go and how many went."""

    def __init__(self, route: h.Route, request_id: str) -> None:
        self.route = route
        self.request_id = request_id
        self.sent = 0


class Gateway:
    """Device questions (``lineside/v1/ask[/<device>]``), the internal replies to its requests,
    streamed pieces from the LLM, and the services' status messages.

    A question goes: rate limit, validation, the device's line, retrieval, the coverage decision,
    generation, the answer. ``workers`` questions are handled at once; more wait in a bounded queue.
    """

    def __init__(self, settings: GatewaySettings, cov: coverage.CoverageSettings, devices: DeviceLines, log: Any) -> None:
        self.s = settings
        self.cov = cov
        self.devices = devices
        self.log = log
        self.counters = Counters()
        self.limiter = h.RateLimiter(settings.rate_per_minute, settings.rate_burst) if settings.rate_per_minute > 0 else None
        self.avail = h.Availability()
        self.streams: dict[str, Stream] = {}
        """Streamed requests in flight by internal key."""
        self.generating: set[str] = set()
        """Internal keys of requests waiting for the LLM: failed at once when the last LLM worker goes offline."""
        self.asks: asyncio.Queue[Inbound] = asyncio.Queue(maxsize=settings.max_waiting)
        self.replies: Replies | None = None
        self._decode = codec.decoder(GatewayInbox)

    def fallback_message(self, lang: str) -> str:
        """The 'contact technical support' text in the question's language."""
        return self.s.fallback_message_zh if lang == "zh" else self.s.fallback_message

    async def send(self, bus: Bus, route: h.Route, answer: Answer | StreamDelta) -> None:
        """Publish an answer (or a stream piece) where the device asked for it."""
        if route.reply_topic is None:
            return
        await bus.publish(
            route.reply_topic if isinstance(answer, Answer) else topics.stream_topic(route.reply_topic),
            codec.encode_answer(answer, msgpack=route.msgpack),
            correlation_data=route.correlation_data,
            content_type=codec.MSGPACK if route.msgpack else "application/json",
        )

    async def on_delta(self, bus: Bus, delta: GenerateDelta) -> None:
        """Pass a piece of generated text on to the device's stream topic, in order."""
        stream = self.streams.get(delta.request_id)
        if stream is None:
            return
        await self.send(bus, stream.route, StreamDelta(request_id=stream.request_id, seq=stream.sent, delta=delta.delta))
        stream.sent += 1

    def on_status(self, service: str, payload: bytes) -> None:
        """A service's retained online/offline: questions waiting for a vanished LLM fail at once."""
        self.avail.update(service, payload)
        if self.avail.down("llm") and self.replies is not None:
            for key in self.generating:
                self.replies.fail(key, ServiceDownError("llm"))

    async def on_reply_inbox(self, bus: Bus, m: Inbound) -> None:
        """A reply to one of the gateway's requests, or a streamed piece of an answer."""
        assert self.replies is not None
        try:
            if self.replies.deliver(m):
                return
            msg = self._decode.decode(m.payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.log.warning(
                "invalid_message", topic=m.topic, reason=describe_decode_error(exc), invalid_total=self.counters.inc("invalid")
            )
            return
        match msg:
            case GenerateDelta():
                await self.on_delta(bus, msg)
            case _:
                pass  # a reply nobody waits for any more (its question timed out)

    async def on_ask(self, bus: Bus, m: Inbound) -> None:
        """A device's question: rate-limit it, then queue it for a worker (or answer busy)."""
        route = h.route_of(m.topic, m.response_topic, m.correlation_data, m.content_type)
        # Devices are limited on their own ask topic (the ACL lets only them write it); the shared
        # ask topic is, on a secured box, written only by the operator's tools.
        device = route.device if route.verified else None
        if self.limiter is not None and device is not None and not self.limiter.allow(device, time.monotonic()):
            self.counters.inc("rate_limited")
            self.log.warning("rate_limited", topic=m.topic, device=route.device)
            message = f"this device asks faster than {self.s.rate_per_minute:g} questions a minute; wait and ask again"
            await self.send(bus, route, h.failed(request_id_quietly(m), "busy", "rate_limited", message, 0.0))
            return
        try:
            self.asks.put_nowait(m)
        except asyncio.QueueFull:
            message = "too many questions are waiting; ask again in a minute"
            await self.send(bus, route, h.failed(h.request_id_of(None, m.correlation_data), "busy", "gateway_busy", message, 0.0))

    async def on_message(self, bus: Bus, m: Inbound) -> None:
        """Dispatch one inbound message by its topic."""
        service = topics.status_service(m.topic)
        if service is not None:
            self.on_status(service, m.payload)
        elif self.replies is not None and m.topic == self.replies.inbox:
            await self.on_reply_inbox(bus, m)
        else:
            await self.on_ask(bus, m)

    async def answer(self, m: Inbound) -> Answer | None:
        """The answer to one question (None when the asker gave up and nobody listens)."""
        assert self.replies is not None
        t0 = m.received_at

        def ms() -> float:
            return (time.monotonic() - t0) * 1000

        route = h.route_of(m.topic, m.response_topic, m.correlation_data, m.content_type)
        try:
            req = codec.decode_ask(m.payload, m.content_type)
        except BadRequest as exc:
            return h.rejected(exc.request_id or h.request_id_of(None, m.correlation_data), exc.code, exc.message, ms())
        rid = h.request_id_of(req, m.correlation_data)
        structlog.contextvars.bind_contextvars(request_id=rid, device=route.device)
        if route.refused:
            return h.rejected(rid, "reply_topic_not_allowed", route.refused, ms())
        line = req.line
        if route.verified and route.device:
            line, refusal = h.line_scope(req.line, self.devices.line_of(route.device))
            if refusal:
                return h.rejected(rid, "line_not_allowed", refusal, ms())
        key = f"{route.device or '-'}/{rid}"
        if self.replies.waiting(key):
            return h.rejected(rid, "duplicate_request", f"request {rid} is already being answered", ms())
        lang = h.language(req)
        if self.avail.down("retriever"):
            return h.failed(rid, "error", "retriever_unavailable", "the retriever service is offline; tell the box's operator", ms())
        search = RetrieveRequest(
            request_id=key,
            question=req.question,
            reply_to=self.replies.inbox,
            top_k=self.s.top_k,
            line=line,
            machine=req.machine,
            doc_type=req.doc_type,
        )
        try:
            rr = await self.replies.request(topics.RETRIEVE, search, RetrieveReply, self.s.retrieve_timeout_s)
        except TimeoutError:
            message = f"the retriever did not answer within {self.s.retrieve_timeout_s:g} s; try again"
            return h.failed(rid, "error", "retriever_timeout", message, ms())
        if rr.error:
            return h.failed(rid, "error", "retrieval_failed", rr.error, ms())
        verdict = coverage.decide(req.question, rr, self.cov)
        if verdict.reason is not None:
            structlog.contextvars.bind_contextvars(fallback=verdict.detail, reason=verdict.reason)
            return h.fallback(rid, self.fallback_message(lang), ms(), verdict.reason)
        if self.avail.down("llm"):
            return h.failed(rid, "error", "llm_unavailable", LLM_DOWN, ms(), rr.passages)
        return await self.generate(m, req, route, rid, key, lang, rr, ms)

    async def generate(
        self, m: Inbound, req: AskRequest, route: h.Route, rid: str, key: str, lang: str, rr: RetrieveReply, ms: Any
    ) -> Answer | None:
        """Have the LLM answer from the passages found, and compose the device's answer."""
        assert self.replies is not None
        deadline = time.time() + m.message_expiry_s if m.message_expiry_s else None
        stream = req.stream and route.reply_topic is not None
        if stream:
            self.streams[key] = Stream(route, rid)
        self.generating.add(key)
        gen = GenerateRequest(
            request_id=key,
            question=req.question,
            lang=lang,
            passages=rr.passages,
            reply_to=self.replies.inbox,
            deadline_unix=deadline,
            stream=stream,
        )
        try:
            gr = await self.replies.request(topics.GENERATE, gen, GenerateReply, self.s.generate_timeout_s)
        except TimeoutError:
            message = f"the language model did not answer within {self.s.generate_timeout_s:g} s; try again"
            return h.failed(rid, "error", "llm_timeout", message, ms())
        except ServiceDownError:
            return h.failed(rid, "error", "llm_unavailable", LLM_DOWN, ms(), rr.passages)
        finally:
            self.generating.discard(key)
            entry = self.streams.pop(key, None)
            if entry is not None:
                await self.send(self.replies.bus, route, StreamDelta(request_id=rid, seq=entry.sent, delta="", final=True))
        if gr.error == "busy":
            return h.failed(rid, "busy", "llm_busy", "too many questions are waiting; ask again in a minute", ms())
        if gr.error == "expired":
            return None  # the asker gave up (message expiry passed): nobody is listening
        if gr.error:
            return h.failed(rid, "error", "generation_failed", gr.error, ms())
        if h.says_unknown(gr.text):
            structlog.contextvars.bind_contextvars(fallback="model found no answer in the passages")
            return h.fallback(rid, self.fallback_message(lang), ms(), "model_unsure")
        valid = [i for i in gr.used if 0 <= i < len(rr.passages)] or list(range(len(rr.passages)))
        used = [rr.passages[i] for i in valid]
        if h.ungrounded(gr.text, used):
            structlog.contextvars.bind_contextvars(fallback="the answer states values found in no source")
            return h.fallback(rid, self.fallback_message(lang), ms(), "model_unsure")
        # The quoted passages' places among those used (the LLM lists every quoted one in `used`).
        quotes = [(valid.index(i), text) for i, text in gr.quotes if i in valid]
        answer = h.compose(rid, gr.text, used, gr.model, ms(), quotes=quotes)
        if gr.cached:
            structlog.contextvars.bind_contextvars(cached=True)
            answer = msgspec.structs.replace(answer, cached=True)
        return answer

    async def _worker(self, bus: Bus) -> None:
        while True:
            m = await self.asks.get()
            structlog.contextvars.clear_contextvars()
            try:
                answer = await self.answer(m)
            except BusError:
                raise
            except Exception as exc:
                self.log.exception("ask_failed", topic=m.topic)
                answer = h.failed(h.request_id_of(None, m.correlation_data), "error", "internal", f"internal error: {exc}", 0.0)
            if answer is None:
                continue
            route = h.route_of(m.topic, m.response_topic, m.correlation_data, m.content_type)
            await self.send(bus, route, answer)
            self.counters.inc(answer.status)
            self.log.info(
                "ask",
                topic=m.topic,
                status=answer.status,
                latency_ms=round(answer.latency_ms, 1),
                sources=len(answer.sources),
                error=answer.error.code if answer.error else None,
                delivered=route.reply_topic is not None,
            )

    async def consume(self, bus: Bus) -> None:
        """The dispatcher and the workers, until cancelled or the connection is lost."""
        self.replies = Replies(bus)

        async def dispatch() -> None:
            async for m in bus.messages():
                await self.on_message(bus, m)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(dispatch(), name="dispatch")
            for i in range(self.s.workers):
                tg.create_task(self._worker(bus), name=f"ask-{i}")

    def make_bus(self) -> Bus:
        """The service's connection: persistent session; device questions, its reply inbox, the services' status."""
        inbox = topics.reply_inbox(self.s.client_id)
        return Bus(
            self.s,
            client_id=self.s.client_id,
            service="gateway",
            subscriptions=(*topics.ASK_FILTERS, inbox, topics.STATUS_ALL),
            persistent=True,
        )

    async def run(self) -> None:
        """Serve until cancelled, reconnecting when the broker goes away."""
        await run_forever(self.make_bus, self.consume, lambda err, wait: self.log.warning("reconnecting", error=err, wait_s=round(wait, 2)))
