"""Gateway settings (environment prefix LINESIDE_GATEWAY_)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from lineside.settings import Connection


class GatewaySettings(Connection, kw_only=True):
    """What the gateway needs to run."""

    client_id: Annotated[str, msgspec.Meta(description="MQTT client id; fixed so the persistent session survives restarts")] = (
        "lineside-gateway"
    )
    fallback_message: Annotated[str, msgspec.Meta(description="Fallback answer for non-Chinese questions")] = (
        "Please contact technical support."
    )
    fallback_message_zh: Annotated[str, msgspec.Meta(description="Fallback answer for Chinese questions")] = "请联系技术支持。"
    top_k: Annotated[int, msgspec.Meta(description="Passages retrieved and given to the model", ge=1, le=20)] = 4
    quote_when_unsure: Annotated[
        bool,
        msgspec.Meta(
            description="When the model says the passages do not answer a question the documents cover, or states values "
            "found in none of them, answer with the source lines that state what was asked (model 'extractive') instead "
            "of falling back; off: such questions fall back with reason model_unsure"
        ),
    ] = True
    retrieve_timeout_s: Annotated[float, msgspec.Meta(description="How long to wait for the retriever", gt=0)] = 15.0
    generate_timeout_s: Annotated[float, msgspec.Meta(description="How long to wait for the LLM, queueing included", gt=0)] = 120.0
    workers: Annotated[int, msgspec.Meta(description="Questions handled concurrently (each mostly waits on the LLM)", ge=1)] = 32
    max_waiting: Annotated[int, msgspec.Meta(description="Questions waiting for a worker before new ones get 'busy'", ge=1)] = 256
    rate_per_minute: Annotated[
        float, msgspec.Meta(description="Questions per minute one device may ask on average (0: no limit)", ge=0)
    ] = 30.0
    rate_burst: Annotated[int, msgspec.Meta(description="Questions one device may ask at once before the rate applies", ge=1)] = 10
    worker_deadline_s: Annotated[
        float,
        msgspec.Meta(
            description="How long a question waits for a retriever or LLM that went away to come back, counted from its arrival "
            "(a device's Message Expiry takes its place when given); then 'error'",
            gt=0,
        ),
    ] = 60.0
    journal_keep_s: Annotated[
        float,
        msgspec.Meta(
            description="How long an answered question's device and request id are remembered: a copy within it gets no answer", gt=0
        ),
    ] = 3600.0
    audit_retention_days: Annotated[
        float, msgspec.Meta(description="Days the audit log keeps each question and answer (0: forever; at least 1 otherwise)", ge=0)
    ] = 365.0
    accounts_file: Annotated[
        str,
        msgspec.Meta(
            description="Device registry written by `lineside device` (devices' lines); default <data dir>/security/accounts.json"
        ),
    ] = ""
