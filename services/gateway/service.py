"""The gateway service: the device-facing side; owns the questions in flight and the services' availability."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any, TypeVar

import msgspec
import structlog

from lineside import coverage
from lineside.audit import AuditLog
from lineside.bus import Bus, BusError, Inbound, Replies, run_forever
from lineside.errors import LinesideError
from lineside.metrics import GatewayMetrics
from lineside.runtime import Counters, describe_decode_error
from schemas import codec, topics
from schemas.codec import BadRequest
from schemas.messages import (
    Answer,
    AskRequest,
    AuditQuery,
    AuditRecord,
    AuditReply,
    AuditSource,
    GatewayInbox,
    GenerateDelta,
    GenerateReply,
    GenerateRequest,
    RequestId,
    RetrieveReply,
    RetrieveRequest,
    Source,
    StreamDelta,
    StreamSources,
)
from services.gateway import handlers as h
from services.gateway.devices import DeviceLines
from services.gateway.journal import Journal
from services.gateway.settings import GatewaySettings

LLM_DOWN = (
    "the language model service is offline, so no answer was written; the documents that match are listed as sources. "
    "Tell the box's operator (lineside up restarts a service that dies; its log is in the data directory's logs/)"
)


RETRIEVER_DOWN = "the retriever service is offline and did not come back in time; tell the box's operator"

R = TypeVar("R")


REISSUE_AFTER_CONNECT_S = 5.0
"""After the gateway (re)connects, every request of its own still waiting this long is sent once
more. After a broker restart the workers' retained "online" is the one from before the restart,
and a request the gateway sent in the second before the llm had connected again never reached it
although its session is persistent (seen in tests/e2e/test_crash.py: the question ended
`llm_timeout` two minutes later). Services are back within a second or two (backoff from 0.5 s);
a request that reached its worker and is still being answered is sent twice, and the first reply
wins."""


class ServiceDownError(LinesideError):
    """No worker of a service was online before the question's deadline."""


class WorkerLostError(LinesideError):
    """A worker of the service a request waits for went offline: the request is issued again."""


def request_id_quietly(m: Inbound) -> RequestId:
    """The request id of a question that is refused before it is handled (best effort)."""
    try:
        req: AskRequest | None = codec.decode_ask(m.payload, m.content_type)
    except BadRequest as exc:
        return exc.request_id or h.request_id_of(None, m.correlation_data)
    return h.request_id_of(req, m.correlation_data)


class Stream:
    """A streamed question in flight: where its pieces go and how many went."""

    def __init__(self, route: h.Route, request_id: RequestId) -> None:
        self.route = route
        self.request_id = request_id
        self.sent = 0


class Gateway:
    """Device questions (``lineside/v1/ask[/<device>]``), the internal replies to its requests,
    streamed pieces from the LLM, and the services' status messages.

    A question goes: rate limit, validation, the device's line, retrieval, the coverage decision,
    generation, the answer. ``workers`` questions are handled at once; more wait in a bounded queue.
    """

    def __init__(
        self,
        settings: GatewaySettings,
        cov: coverage.CoverageSettings,
        devices: DeviceLines,
        log: Any,
        *,
        metrics: GatewayMetrics | None = None,
        audit: AuditLog | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.s = settings
        self.cov = cov
        self.devices = devices
        self.log = log
        self.counters = Counters()
        self.metrics = metrics or GatewayMetrics()
        self.metrics.watch(self.counters)
        self.audit = audit
        """Where every final answer is recorded (lineside/audit.py); None: not recorded."""
        self.limiter = h.RateLimiter(settings.rate_per_minute, settings.rate_burst) if settings.rate_per_minute > 0 else None
        self.avail = h.Availability()
        self.streams: dict[str, Stream] = {}
        """Streamed requests in flight by internal key."""
        self.journal = journal
        """Every accepted question until its answer is sent (services/gateway/journal.py); None: kept in memory only."""
        self.waiting_on: dict[str, set[str]] = {}
        """Internal keys of the requests waiting for each service family: issued again when one of its workers goes offline."""
        self._status_changed = asyncio.Event()
        self.resumed: dict[str, float] = {}
        """When (monotonic) each question taken up again from the journal was taken up, by key."""
        self.asks: asyncio.Queue[tuple[Inbound, RequestId]] = asyncio.Queue(maxsize=settings.max_waiting)
        self.metrics.queue_depth.set_function(self.asks.qsize)
        self.replies: Replies | None = None
        self.connections = 0
        """How many times the gateway has connected to the broker (``reissue_after_connect``)."""
        self._decode = codec.decoder(GatewayInbox)
        self._decode_audit = codec.decoder(AuditQuery)

    def fallback_message(self, lang: str) -> str:
        """The 'contact technical support' text in the question's language."""
        return self.s.fallback_message_zh if lang == "zh" else self.s.fallback_message

    async def send(self, bus: Bus, route: h.Route, answer: Answer | StreamDelta | StreamSources) -> None:
        """Publish an answer (or a stream piece, or the passages found) where the device asked for it."""
        if route.reply_topic is None:
            return
        if isinstance(answer, Answer):
            topic = route.reply_topic
        elif isinstance(answer, StreamSources):
            topic = topics.sources_topic(route.reply_topic)
        else:
            topic = topics.stream_topic(route.reply_topic)
        await bus.publish(
            topic,
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
        """A service's retained online/offline: requests a vanished worker may have held are issued again."""
        self.avail.update(service, payload)
        family = service.split("-", 1)[0]
        if payload.strip() != b"online" and self.replies is not None:
            for key in list(self.waiting_on.get(family, ())):
                self.replies.fail(key, WorkerLostError(service))
        self._status_changed.set()
        self._status_changed = asyncio.Event()

    async def until_up(self, family: str, deadline: float) -> None:
        """Return once a worker of ``family`` is online; ServiceDownError at ``deadline`` (monotonic)."""
        while self.avail.down(family):
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServiceDownError(family)
            try:
                await asyncio.wait_for(self._status_changed.wait(), left)
            except TimeoutError:
                raise ServiceDownError(family) from None

    async def call(
        self, family: str, topic: str, message: RetrieveRequest | GenerateRequest, reply_type: type[R], timeout_s: float, deadline: float
    ) -> R:
        """Send a request to a service and wait for its reply; when the worker that may hold it goes
        offline, send it again once a worker is back. ServiceDownError when none is back by
        ``deadline`` (monotonic), TimeoutError after ``timeout_s`` of one attempt without a reply."""
        assert self.replies is not None
        key = message.request_id
        waiting = self.waiting_on.setdefault(family, set())
        while True:
            await self.until_up(family, deadline)
            waiting.add(key)
            try:
                return await self.replies.request(topic, message, reply_type, timeout_s)
            except WorkerLostError as exc:
                self.log.info("reissue", request_id=key, worker=str(exc), reissued_total=self.counters.inc("reissued"))
            finally:
                waiting.discard(key)

    def deadline_of(self, m: Inbound, key: str) -> float:
        """Until when (monotonic) a question waits for a service that went away: its Message Expiry,
        else the setting, from its arrival (or, for one taken up again from the journal, from then:
        after a restart of the whole box the services come online after the gateway)."""
        if m.message_expiry_s:
            return m.received_at + m.message_expiry_s
        return max(m.received_at, self.resumed.get(key, 0.0)) + self.s.worker_deadline_s

    async def finish(self, key: str, status: str) -> None:
        """Mark a question answered in the journal (a failed write is logged: the answer went out)."""
        if self.journal is not None:
            try:
                await asyncio.to_thread(self.journal.finish, key, status)
            except sqlite3.Error as exc:
                self.log.error("journal_write_failed", key=key, reason=f"{type(exc).__name__}: {exc}")

    async def first_time(self, key: str, rid: RequestId, m: Inbound) -> bool:
        """Journal a question; False when it is a copy of one already there. When the journal cannot
        be written (a full disk) the question is answered anyway, and the failure logged."""
        if self.journal is None:
            return True
        try:
            return await asyncio.to_thread(self.journal.accept, key, str(rid), m)
        except sqlite3.Error as exc:
            self.log.error("journal_write_failed", key=key, reason=f"{type(exc).__name__}: {exc}")
            return True

    async def reissue_after_connect(self) -> None:
        """Send again, once, what is still waiting ``REISSUE_AFTER_CONNECT_S`` after connecting again
        (not after the first connection: then no worker can have missed a request)."""
        self.connections += 1
        if self.connections == 1:
            return
        await asyncio.sleep(REISSUE_AFTER_CONNECT_S)
        if self.replies is None:
            return
        for family, keys in self.waiting_on.items():
            for key in list(keys):
                self.replies.fail(key, WorkerLostError(f"{family}: sent while the broker came back"))

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
        """A device's question: journal it (a copy of one already there is dropped: one answer per
        device and request id), rate-limit it, then queue it for a worker (or answer busy)."""
        route = h.route_of(m.topic, m.response_topic, m.correlation_data, m.content_type)
        rid = request_id_quietly(m)
        key = h.question_key(route.device, rid)
        if not await self.first_time(key, rid, m):
            self.log.info("duplicate_dropped", topic=m.topic, request_id=rid, device=route.device, total=self.counters.inc("duplicate"))
            return
        # Devices are limited on their own ask topic (the ACL lets only them write it); the shared
        # ask topic is, on a secured box, written only by the operator's tools.
        device = route.device if route.verified else None
        if self.limiter is not None and device is not None and not self.limiter.allow(device, time.monotonic()):
            self.counters.inc("rate_limited")
            self.log.warning("rate_limited", topic=m.topic, device=route.device, request_id=rid)
            message = f"this device asks faster than {self.s.rate_per_minute:g} questions a minute; wait and ask again"
            busy = h.failed(rid, "busy", "rate_limited", message, 0.0)
            await self.send(bus, route, busy)
            await self.finish(key, busy.status)
            await self.record(m, busy)
            return
        try:
            self.asks.put_nowait((m, rid))
        except asyncio.QueueFull:
            message = "too many questions are waiting; ask again in a minute"
            busy = h.failed(rid, "busy", "gateway_busy", message, 0.0)
            await self.send(bus, route, busy)
            await self.finish(key, busy.status)
            await self.record(m, busy)

    async def on_message(self, bus: Bus, m: Inbound) -> None:
        """Dispatch one inbound message by its topic."""
        service = topics.status_service(m.topic)
        if service is not None:
            self.on_status(service, m.payload)
        elif m.topic.startswith(topics.BROKER_SYS):
            self.metrics.broker.update(m.topic, m.payload)
        elif m.topic == topics.AUDIT_QUERY:
            await self.on_audit_query(bus, m)
        elif self.replies is not None and m.topic == self.replies.inbox:
            await self.on_reply_inbox(bus, m)
        else:
            await self.on_ask(bus, m)

    async def answer(self, m: Inbound, rid: RequestId) -> Answer | None:
        """The answer to question ``m`` with request id ``rid`` (None when the asker gave up and nobody listens)."""
        assert self.replies is not None
        t0 = m.received_at

        def ms() -> float:
            return (time.monotonic() - t0) * 1000

        route = h.route_of(m.topic, m.response_topic, m.correlation_data, m.content_type)
        # Every log line of this question names its device and request id, a rejected one's too.
        structlog.contextvars.bind_contextvars(request_id=rid, device=route.device)
        try:
            req = codec.decode_ask(m.payload, m.content_type)
        except BadRequest as exc:
            structlog.contextvars.bind_contextvars(rejected=exc.code)
            return h.rejected(rid, exc.code, exc.message, ms())
        if route.refused:
            return h.rejected(rid, "reply_topic_not_allowed", route.refused, ms())
        line = req.line
        if route.verified and route.device:
            line, refusal = h.line_scope(req.line, self.devices.line_of(route.device))
            if refusal:
                return h.rejected(rid, "line_not_allowed", refusal, ms())
        key = h.question_key(route.device, rid)
        lang = h.language(req)
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
            rr = await self.call("retriever", topics.RETRIEVE, search, RetrieveReply, self.s.retrieve_timeout_s, self.deadline_of(m, key))
        except TimeoutError:
            message = f"the retriever did not answer within {self.s.retrieve_timeout_s:g} s; try again"
            return h.failed(rid, "error", "retriever_timeout", message, ms())
        except ServiceDownError:
            return h.failed(rid, "error", "retriever_unavailable", RETRIEVER_DOWN, ms())
        structlog.contextvars.bind_contextvars(retrieval_ms=round(rr.latency_ms, 1))
        if rr.error:
            return h.failed(rid, "error", "retrieval_failed", rr.error, ms())
        verdict = coverage.decide(req.question, rr, self.cov)
        if verdict.reason is not None:
            structlog.contextvars.bind_contextvars(fallback=verdict.detail, reason=verdict.reason)
            return h.fallback(rid, self.fallback_message(lang), ms(), verdict.reason)
        return await self.generate(m, req, route, rid, key, lang, rr, ms)

    async def generate(
        self, m: Inbound, req: AskRequest, route: h.Route, rid: RequestId, key: str, lang: str, rr: RetrieveReply, ms: Any
    ) -> Answer | None:
        """Have the LLM answer from the passages found, and compose the device's answer."""
        assert self.replies is not None
        deadline = time.time() + m.message_expiry_s if m.message_expiry_s else None
        stream = req.stream and route.reply_topic is not None
        if stream:
            self.streams[key] = Stream(route, rid)
        if stream and req.early_sources:
            # Evidence first: the passages found go to the device before the model starts writing.
            found = [Source(doc=p.doc, locator=p.locator, score=round(p.score, 4), snippet=h.snippet(p.text)) for p in rr.passages]
            await self.send(self.replies.bus, route, StreamSources(request_id=rid, sources=found))
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
            gr = await self.call("llm", topics.GENERATE, gen, GenerateReply, self.s.generate_timeout_s, self.deadline_of(m, key))
        except TimeoutError:
            message = f"the language model did not answer within {self.s.generate_timeout_s:g} s; try again"
            return h.failed(rid, "error", "llm_timeout", message, ms())
        except ServiceDownError:
            return h.failed(rid, "error", "llm_unavailable", LLM_DOWN, ms(), rr.passages)
        finally:
            entry = self.streams.pop(key, None)
            if entry is not None:
                await self.send(self.replies.bus, route, StreamDelta(request_id=rid, seq=entry.sent, delta="", final=True))
        structlog.contextvars.bind_contextvars(generation_ms=round(gr.latency_ms, 1), ttft_ms=round(gr.ttft_ms, 1))
        if gr.error == "busy":
            return h.failed(rid, "busy", "llm_busy", "too many questions are waiting; ask again in a minute", ms())
        if gr.error == "expired":
            return None  # the asker gave up (message expiry passed): nobody is listening
        if gr.error:
            return h.failed(rid, "error", "generation_failed", gr.error, ms())
        valid = [i for i in gr.used if 0 <= i < len(rr.passages)] or list(range(len(rr.passages)))
        used = [rr.passages[i] for i in valid]
        unsure = h.unsure(gr.text, used)
        if unsure:
            quotes = [(i, text) for i, text in gr.quotes if 0 <= i < len(rr.passages)]
            if self.s.quote_when_unsure and quotes:
                # The documents cover the question and a line of them states what was asked: that line, not support.
                structlog.contextvars.bind_contextvars(extractive=unsure)
                return h.extractive(rid, quotes, rr.passages, ms())
            structlog.contextvars.bind_contextvars(fallback=unsure)
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
            m, rid = await self.asks.get()
            structlog.contextvars.clear_contextvars()
            try:
                answer = await self.answer(m, rid)
            except BusError:
                raise
            except Exception as exc:
                self.log.exception("ask_failed", topic=m.topic)
                answer = h.failed(rid, "error", "internal", f"internal error: {exc}", 0.0)
            route = h.route_of(m.topic, m.response_topic, m.correlation_data, m.content_type)
            if answer is None:
                await self.finish(h.question_key(route.device, rid), "expired")
                continue
            await self.send(bus, route, answer)
            await self.finish(h.question_key(route.device, rid), answer.status)
            self.counters.inc(answer.status)
            await self.record(m, answer)
            self.log.info(
                "ask",
                topic=m.topic,
                device=route.device,
                request_id=rid,
                status=answer.status,
                latency_ms=round(answer.latency_ms, 1),
                sources=len(answer.sources),
                error=answer.error.code if answer.error else None,
                delivered=route.reply_topic is not None,
            )

    async def record(self, m: Inbound, answer: Answer) -> None:
        """Count a final answer and append it to the audit log (after it was sent: a failed write
        is logged and counted, and the device has its answer anyway)."""
        reason = answer.reason or (answer.error.code if answer.error else "") or ("extractive" if answer.model == "extractive" else "")
        self.metrics.answered(answer.status, reason, answer.latency_ms / 1000)
        if self.audit is None:
            return
        route = h.route_of(m.topic, m.response_topic, m.correlation_data, m.content_type)
        try:
            req: AskRequest | None = codec.decode_ask(m.payload, m.content_type)
        except BadRequest:
            req = None
        line = req.line if req is not None else None
        if line is None and route.verified and route.device:
            line = self.devices.line_of(route.device)
        timings = structlog.contextvars.get_contextvars()  # bound by answer() and generate() for this question
        rec = AuditRecord(
            ts=time.time(),
            request_id=str(answer.request_id),
            device=route.device or "",
            line=line,
            question=req.question if req is not None else "",
            status=answer.status,
            reason=reason,
            answer=answer.answer,
            sources=[AuditSource(doc=s.doc, locator=s.locator) for s in answer.sources],
            model=answer.model,
            latency_ms=answer.latency_ms,
            retrieval_ms=float(timings.get("retrieval_ms", 0.0)),
            generation_ms=float(timings.get("generation_ms", 0.0)),
            ttft_ms=float(timings.get("ttft_ms", 0.0)),
        )
        try:
            await asyncio.to_thread(self.audit.record, rec)
        except Exception as exc:
            self.metrics.audit_failures.inc()
            self.log.error("audit_write_failed", request_id=answer.request_id, reason=f"{type(exc).__name__}: {exc}")

    async def on_audit_query(self, bus: Bus, m: Inbound) -> None:
        """An operator's query of the audit log (MessagePack, or JSON for a web page; the broker's ACL
        lets only operator accounts publish it): the records, or the knowledge-gap report."""
        as_json = m.payload[:1] == b"{"
        try:
            q = msgspec.json.decode(m.payload, type=AuditQuery) if as_json else self._decode_audit.decode(m.payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.log.warning(
                "invalid_message", topic=m.topic, reason=describe_decode_error(exc), invalid_total=self.counters.inc("invalid")
            )
            return
        if not q.reply_to.startswith(topics.AUDIT_REPLY_ROOT + "/") or not topics.is_valid_publish_topic(q.reply_to):
            self.log.warning("audit_reply_refused", request_id=q.request_id, reason="reply_to must be under " + topics.AUDIT_REPLY_ROOT)
            return
        if self.audit is None:
            reply = AuditReply(request_id=q.request_id, error="this gateway keeps no audit log")
        else:
            try:
                if q.gaps:
                    reply = AuditReply(request_id=q.request_id, gaps=await asyncio.to_thread(self.audit.gaps, since=q.since))
                else:
                    found = await asyncio.to_thread(self.audit.query, since=q.since, device=q.device, status=q.status, limit=q.limit)
                    reply = AuditReply(request_id=q.request_id, records=found)
            except LinesideError as exc:
                reply = AuditReply(request_id=q.request_id, error=str(exc))
        await bus.publish(q.reply_to, msgspec.json.encode(reply) if as_json else codec.encode(reply))
        self.log.info("audit_query", request_id=q.request_id, records=len(reply.records), gaps=len(reply.gaps), error=reply.error)

    async def consume(self, bus: Bus) -> None:
        """The dispatcher and the workers, until cancelled or the connection is lost.

        Questions the previous connection's workers had not answered are in the journal: they are
        queued again first (read before the dispatcher journals anything new, so none is queued twice).
        """
        self.replies = Replies(bus)
        while not self.asks.empty():
            self.asks.get_nowait()
        self.streams.clear()
        self.waiting_on.clear()
        pending = await asyncio.to_thread(self.journal.pending) if self.journal is not None else []
        self.resumed = dict.fromkeys((key for _, _, key in pending), time.monotonic())
        if pending:
            self.log.info("resuming", questions=len(pending))

        async def resume() -> None:
            for m, rid, _ in pending:
                # The journal keeps the id as text: an integer the device sent is echoed as one.
                sent = request_id_quietly(m)
                await self.asks.put((m, sent if isinstance(sent, int) and str(sent) == rid else rid))

        async def dispatch() -> None:
            # A manual-ack bus acknowledges a message when the loop comes back for the next: a
            # question only once it is in the journal.
            async for m in bus.messages():
                await self.on_message(bus, m)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(resume(), name="resume")
            tg.create_task(dispatch(), name="dispatch")
            tg.create_task(self.reissue_after_connect(), name="reissue-after-connect")
            for i in range(self.s.workers):
                tg.create_task(self._worker(bus), name=f"ask-{i}")

    def make_bus(self) -> Bus:
        """The service's connection: persistent session; device questions, its reply inbox, the services' status."""
        inbox = topics.reply_inbox(self.s.client_id)
        return Bus(
            self.s,
            client_id=self.s.client_id,
            service="gateway",
            subscriptions=(*topics.ASK_FILTERS, inbox, topics.STATUS_ALL, topics.AUDIT_QUERY, *topics.BROKER_STATS),
            persistent=True,
            manual_ack=self.journal is not None,
        )

    async def run(self) -> None:
        """Serve until cancelled, reconnecting when the broker goes away."""
        await run_forever(self.make_bus, self.consume, self.metrics.on_reconnect(self.log))
