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
    profile: Annotated[str, msgspec.Meta(description="Model profile: 'default' (Qwen2.5-Coder-0.5B-Instruct Q4_K_M)")] = "default"
    model: Annotated[str | None, msgspec.Meta(description="Path to any GGUF file; overrides the profile")] = None
    model_dir: Annotated[str, msgspec.Meta(description="Where assembled model files are kept")] = msgspec.field(
        default_factory=default_model_dir
    )
    threads: Annotated[int, msgspec.Meta(description="llama.cpp threads (the cores you give it)", ge=1)] = 2
    context: Annotated[int, msgspec.Meta(description="Context window in tokens", ge=512)] = 2048
    max_tokens: Annotated[int, msgspec.Meta(description="Most tokens generated per answer", ge=16)] = 160
    context_budget: Annotated[
        int,
        msgspec.Meta(
            description="Tokens of retrieved text put into the prompt (at ~200 prompt tokens/s on 2 cores, 300 tokens is ~1.5 s)", ge=50
        ),
    ] = 300
    max_queue: Annotated[int, msgspec.Meta(description="Questions waiting for the model before new ones get 'busy'", ge=1)] = 16
