"""llama.cpp behind a small interface."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Generation:
    """Text and token counts of one completion."""

    text: str
    prompt_tokens: int
    completion_tokens: int


class ChatModel(Protocol):
    """Anything that completes a chat."""

    name: str

    def chat(self, messages: list[dict[str, str]], max_tokens: int) -> Generation:
        """Complete ``messages`` greedily."""
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

    def chat(self, messages: list[dict[str, str]], max_tokens: int) -> Generation:
        """Greedy completion (temperature 0): the same sources give the same answer."""
        out = self._llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0.0)  # type: ignore[arg-type]
        usage = out["usage"]  # type: ignore[index]
        text = out["choices"][0]["message"]["content"] or ""  # type: ignore[index]
        return Generation(text=text.strip(), prompt_tokens=usage["prompt_tokens"], completion_tokens=usage["completion_tokens"])
