"""Gateway wiring: device inbox, internal request/reply with retriever and LLM, answers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import structlog

from lineside import coverage
from lineside.bus import Bus, BusError, Inbound, run_forever
from lineside.errors import LinesideError
from lineside.log import configure
from lineside.runtime import Counters, describe_decode_error, run
from lineside.settings import load
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


def request_id_quietly(m: Inbound) -> str:
    """The request id of a question that is refused before it is handled (best effort)."""
    try:
        req: AskRequest | None = codec.decode_ask(m.payload, m.content_type)
    except BadRequest as exc:
        return exc.request_id or h.request_id_of(None, m.correlation_data)
    return h.request_id_of(req, m.correlation_data)


LLM_DOWN = (
    "the language model service is offline, so no answer was written; the documents that match are listed as sources. "
    "Tell the box's operator (lineside up restarts a service that dies; its log is in the data directory's logs/)"
)


class ServiceDownError(LinesideError):
    """A service went offline while a request waited for it."""


async def main() -> None:
    """Serve device questions until cancelled."""
    s = load(GatewaySettings, "LINESIDE_GATEWAY_")
    cov = load(coverage.CoverageSettings, coverage.ENV_PREFIX)
    log = configure("gateway")
    inbox = topics.reply_inbox(s.client_id)
    decode = codec.decoder(GatewayInbox)
    pending: dict[str, asyncio.Future[RetrieveReply | GenerateReply]] = {}
    streams: dict[str, tuple[h.Route, str, list[int]]] = {}
    """Streamed requests in flight: internal key -> (route, device request id, [pieces sent])."""
    counters = Counters()
    limiter = h.RateLimiter(s.rate_per_minute, s.rate_burst) if s.rate_per_minute > 0 else None
    avail = h.Availability()
    generating: set[str] = set()
    """Internal keys of requests waiting for the LLM: failed at once when the last LLM worker goes offline."""
    devices = DeviceLines(Path(s.accounts_file) if s.accounts_file else Path(s.data_dir) / "security" / "accounts.json")

    async def call(bus: Bus, topic: str, msg: RetrieveRequest | GenerateRequest, wait_s: float) -> RetrieveReply | GenerateReply:
        fut: asyncio.Future[RetrieveReply | GenerateReply] = asyncio.get_running_loop().create_future()
        pending[msg.request_id] = fut
        try:
            await bus.publish(topic, codec.encode(msg))
            return await asyncio.wait_for(fut, wait_s)
        finally:
            pending.pop(msg.request_id, None)

    async def send(bus: Bus, route: h.Route, answer: Answer | StreamDelta) -> None:
        if route.reply_topic is None:
            return
        await bus.publish(
            route.reply_topic if isinstance(answer, Answer) else topics.stream_topic(route.reply_topic),
            codec.encode_answer(answer, msgpack=route.msgpack),
            correlation_data=route.correlation_data,
            content_type=codec.MSGPACK if route.msgpack else "application/json",
        )

    async def relay(bus: Bus, delta: GenerateDelta) -> None:
        """Pass a piece of generated text on to the device's stream topic, in order."""
        entry = streams.get(delta.request_id)
        if entry is None:
            return
        route, rid, sent = entry
        await send(bus, route, StreamDelta(request_id=rid, seq=sent[0], delta=delta.delta))
        sent[0] += 1

    async def handle(bus: Bus, m: Inbound) -> Answer | None:
        t0 = m.received_at
        ms = lambda: (time.monotonic() - t0) * 1000  # noqa: E731
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
            line, refusal = h.line_scope(req.line, devices.line_of(route.device))
            if refusal:
                return h.rejected(rid, "line_not_allowed", refusal, ms())
        key = f"{route.device or '-'}/{rid}"
        if key in pending:
            return h.rejected(rid, "duplicate_request", f"request {rid} is already being answered", ms())
        lang = h.language(req)
        if avail.down("retriever"):
            return h.failed(rid, "error", "retriever_unavailable", "the retriever service is offline; tell the box's operator", ms())
        try:
            rr = await call(
                bus,
                topics.RETRIEVE,
                RetrieveRequest(
                    request_id=key,
                    question=req.question,
                    reply_to=inbox,
                    top_k=s.top_k,
                    line=line,
                    machine=req.machine,
                    doc_type=req.doc_type,
                ),
                s.retrieve_timeout_s,
            )
        except TimeoutError:
            return h.failed(
                rid, "error", "retriever_timeout", f"the retriever did not answer within {s.retrieve_timeout_s:g} s; try again", ms()
            )
        assert isinstance(rr, RetrieveReply)
        if rr.error:
            return h.failed(rid, "error", "retrieval_failed", rr.error, ms())
        verdict = coverage.decide(
            req.question,
            rr.passages,
            unknown_terms=rr.unknown_terms,
            unknown_lines=rr.unknown_lines,
            exact_match=rr.exact_match,
            best_score=rr.best_score,
            content_words=rr.content_words,
            absent_words=rr.absent_words,
            threshold=cov.threshold,
            absent_share=cov.absent_share,
        )
        if verdict.reason is not None:
            structlog.contextvars.bind_contextvars(fallback=verdict.detail, reason=verdict.reason)
            return h.fallback(rid, s.fallback_message_zh if lang == "zh" else s.fallback_message, ms(), verdict.reason)
        if avail.down("llm"):
            return h.failed(rid, "error", "llm_unavailable", LLM_DOWN, ms(), rr.passages)
        deadline = time.time() + m.message_expiry_s if m.message_expiry_s else None
        stream = req.stream and route.reply_topic is not None
        if stream:
            streams[key] = (route, rid, [0])
        generating.add(key)
        try:
            gr = await call(
                bus,
                topics.GENERATE,
                GenerateRequest(
                    request_id=key,
                    question=req.question,
                    lang=lang,
                    passages=rr.passages,
                    reply_to=inbox,
                    deadline_unix=deadline,
                    stream=stream,
                ),
                s.generate_timeout_s,
            )
        except TimeoutError:
            return h.failed(
                rid, "error", "llm_timeout", f"the language model did not answer within {s.generate_timeout_s:g} s; try again", ms()
            )
        except ServiceDownError:
            return h.failed(rid, "error", "llm_unavailable", LLM_DOWN, ms(), rr.passages)
        finally:
            generating.discard(key)
            entry = streams.pop(key, None)
            if entry is not None:
                await send(bus, route, StreamDelta(request_id=rid, seq=entry[2][0], delta="", final=True))
        assert isinstance(gr, GenerateReply)
        if gr.error == "busy":
            return h.failed(rid, "busy", "llm_busy", "too many questions are waiting; ask again in a minute", ms())
        if gr.error == "expired":
            return None  # the asker gave up (message expiry passed): nobody is listening
        if gr.error:
            return h.failed(rid, "error", "generation_failed", gr.error, ms())
        if h.says_unknown(gr.text):
            structlog.contextvars.bind_contextvars(fallback="model found no answer in the passages")
            return h.fallback(rid, s.fallback_message_zh if lang == "zh" else s.fallback_message, ms(), "model_unsure")
        valid = [i for i in gr.used if 0 <= i < len(rr.passages)] or list(range(len(rr.passages)))
        used = [rr.passages[i] for i in valid]
        if h.ungrounded(gr.text, used):
            structlog.contextvars.bind_contextvars(fallback="the answer states values found in no source")
            return h.fallback(rid, s.fallback_message_zh if lang == "zh" else s.fallback_message, ms(), "model_unsure")
        # The quoted passages' places among those used (the LLM lists every quoted one in `used`).
        quotes = [(valid.index(i), text) for i, text in gr.quotes if i in valid]
        answer = h.compose(rid, gr.text, used, gr.model, ms(), quotes=quotes)
        if gr.cached:
            structlog.contextvars.bind_contextvars(cached=True)
            answer = msgspec.structs.replace(answer, cached=True)
        return answer

    async def consume(bus: Bus) -> None:
        asks: asyncio.Queue[Inbound] = asyncio.Queue(maxsize=s.max_waiting)

        async def dispatch() -> None:
            async for m in bus.messages():
                service = topics.status_service(m.topic)
                if service is not None:
                    avail.update(service, m.payload)
                    if avail.down("llm"):
                        for key in generating:
                            fut = pending.get(key)
                            if fut is not None and not fut.done():
                                fut.set_exception(ServiceDownError("llm"))
                    continue
                if m.topic.startswith(inbox):
                    try:
                        reply = decode.decode(m.payload)
                    except Exception as exc:
                        log.warning(
                            "invalid_message", topic=m.topic, reason=describe_decode_error(exc), invalid_total=counters.inc("invalid")
                        )
                        continue
                    if isinstance(reply, GenerateDelta):
                        await relay(bus, reply)
                        continue
                    fut = pending.get(reply.request_id)
                    if fut is not None and not fut.done():
                        fut.set_result(reply)
                    continue
                route = h.route_of(m.topic, m.response_topic, m.correlation_data, m.content_type)
                # Devices are limited on their own ask topic (the ACL lets only them write it); the shared
                # ask topic is, on a secured box, written only by the operator's tools.
                device = route.device if route.verified else None
                if limiter is not None and device is not None and not limiter.allow(device, time.monotonic()):
                    counters.inc("rate_limited")
                    log.warning("rate_limited", topic=m.topic, device=route.device)
                    await send(
                        bus,
                        route,
                        h.failed(
                            request_id_quietly(m),
                            "busy",
                            "rate_limited",
                            f"this device asks faster than {s.rate_per_minute:g} questions a minute; wait and ask again",
                            0.0,
                        ),
                    )
                    continue
                try:
                    asks.put_nowait(m)
                except asyncio.QueueFull:
                    route = h.route_of(m.topic, m.response_topic, m.correlation_data, m.content_type)
                    await send(
                        bus,
                        route,
                        h.failed(
                            h.request_id_of(None, m.correlation_data),
                            "busy",
                            "gateway_busy",
                            "too many questions are waiting; ask again in a minute",
                            0.0,
                        ),
                    )

        async def worker() -> None:
            while True:
                m = await asks.get()
                structlog.contextvars.clear_contextvars()
                try:
                    answer = await handle(bus, m)
                except BusError:
                    raise
                except Exception as exc:
                    log.exception("ask_failed", topic=m.topic)
                    answer = h.failed(h.request_id_of(None, m.correlation_data), "error", "internal", f"internal error: {exc}", 0.0)
                if answer is None:
                    continue
                route = h.route_of(m.topic, m.response_topic, m.correlation_data, m.content_type)
                await send(bus, route, answer)
                counters.inc(answer.status)
                log.info(
                    "ask",
                    topic=m.topic,
                    status=answer.status,
                    latency_ms=round(answer.latency_ms, 1),
                    sources=len(answer.sources),
                    error=answer.error.code if answer.error else None,
                    delivered=route.reply_topic is not None,
                )

        async with asyncio.TaskGroup() as tg:
            tg.create_task(dispatch(), name="dispatch")
            for i in range(s.workers):
                tg.create_task(worker(), name=f"ask-{i}")

    def make_bus() -> Bus:
        return Bus(
            s, client_id=s.client_id, service="gateway", subscriptions=(*topics.ASK_FILTERS, inbox, topics.STATUS_ALL), persistent=True
        )

    await run_forever(make_bus, consume, lambda err, wait: log.warning("reconnecting", error=err, wait_s=round(wait, 2)))


if __name__ == "__main__":
    run(main)
