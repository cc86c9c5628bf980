"""llama.cpp behind a small interface."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from services.llm.handlers import drop_repeats, looping


@dataclass(frozen=True)
class Generation:
    """Text and token counts of one completion."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float = 0.0


class ChatModel(Protocol):
    """Anything that completes a chat."""

    name: str

    def chat(self, messages: list[dict[str, str]], max_tokens: int, on_delta: Callable[[str], None] | None = None) -> Generation:
        """Complete ``messages`` greedily; ``on_delta`` receives each piece of text as it is generated."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in this model's vocabulary."""
        ...


class LlamaCpp:
    """A GGUF model run by llama-cpp-python on the CPU."""

    def __init__(self, path: Path, name: str, *, threads: int, context: int) -> None:
        from llama_cpp import Llama

        self.name = name
        self._llm = Llama(model_path=str(path), n_ctx=context, n_threads=threads, n_threads_batch=threads, verbose=False)

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in this model's vocabulary."""
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False))

    def chat(self, messages: list[dict[str, str]], max_tokens: int, on_delta: Callable[[str], None] | None = None) -> Generation:
        """Greedy completion (temperature 0): the same sources give the same answer.

        Always streamed from llama.cpp, so time to first token is measured for every answer;
        ``on_delta`` (called in this thread) gets each piece of text as it comes.
        """
        t0 = time.perf_counter()
        ttft = 0.0
        pieces: list[str] = []
        stream = self._llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0.0, stream=True)  # type: ignore[arg-type]
        for chunk in stream:
            content = chunk["choices"][0]["delta"].get("content")  # type: ignore[index, union-attr]
            if not isinstance(content, str) or not content:
                continue
            delta = content
            if not delta:
                continue
            if not pieces:
                ttft = (time.perf_counter() - t0) * 1000
                delta = delta.lstrip()
            pieces.append(delta)
            if on_delta is not None and delta:
                on_delta(delta)
            if "\n" in delta and looping("".join(pieces)):
                break  # a small model repeating itself greedily would fill max_tokens with the same lines
        completion = len(pieces)
        # A streamed completion reports no usage: the context holds prompt + completion tokens.
        prompt = max(0, self._llm.n_tokens - completion)
        return Generation(text=drop_repeats("".join(pieces)).strip(), prompt_tokens=prompt, completion_tokens=completion, ttft_ms=ttft)

    def forget(self) -> None:
        """Drop the evaluated context, so the next prompt reuses nothing (for measuring the KV-cache gain)."""
        self._llm.reset()  # type: ignore[no-untyped-call]
