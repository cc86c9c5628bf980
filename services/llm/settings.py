"""LLM settings (environment prefix LINESIDE_LLM_)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from lineside.settings import Connection, default_model_dir


class LlmSettings(Connection, kw_only=True):
    """What the LLM service needs to run."""

    client_id: Annotated[str, msgspec.Meta(description="MQTT client id; fixed so the persistent session survives restarts")] = (
        "lineside-llm"
    )
    profile: Annotated[
        str,
        msgspec.Meta(
            description="Model profile: 'tiny' (SmolLM2-135M), 'default' (Qwen2.5-Coder-0.5B-Instruct Q4_K_M), "
            "'large' (Qwen2.5-Coder-1.5B-Instruct), or 'none' (no model: quote the best passage)"
        ),
    ] = "default"
    model: Annotated[str | None, msgspec.Meta(description="Path to any GGUF file; overrides the profile")] = None
    model_dir: Annotated[str, msgspec.Meta(description="Where assembled model files are kept")] = msgspec.field(
        default_factory=default_model_dir
    )
    threads: Annotated[int, msgspec.Meta(description="llama.cpp threads (the cores you give it)", ge=1)] = 2
    context: Annotated[int, msgspec.Meta(description="Context window in tokens", ge=512)] = 2048
    max_tokens: Annotated[
        int, msgspec.Meta(description="Most tokens generated per answer (256: an 8-step procedure fits; 160 cut them short)", ge=16)
    ] = 256
    context_budget: Annotated[
        int,
        msgspec.Meta(
            description="Tokens of retrieved text put into the prompt (at ~200 prompt tokens/s on 2 cores, 300 tokens is ~1.5 s)", ge=50
        ),
    ] = 300
    max_queue: Annotated[int, msgspec.Meta(description="Questions waiting for the model before new ones get 'busy'", ge=1)] = 16
    cache_size: Annotated[
        int, msgspec.Meta(description="Answers kept by exact prompt, served again in milliseconds (0 turns the cache off)", ge=0)
    ] = 256
    share_group: Annotated[
        str,
        msgspec.Meta(
            description="MQTT 5 shared-subscription group: workers in the same group split the questions between them "
            "(empty: every worker gets every question)"
        ),
    ] = "llm"
    quote_evidence: Annotated[
        bool,
        msgspec.Meta(description="Follow each generated answer with the best passage's matching lines, quoted (what the source says)"),
    ] = True
