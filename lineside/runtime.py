"""Process lifecycle shared by the services: signals cancel the main task, cleanup runs in finally."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import faulthandler
import functools
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

import msgspec

from lineside.errors import LinesideError


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main`` until it returns or SIGTERM/SIGINT cancels it.

    ``kill -USR1 <pid>`` writes every thread's stack to the service's log (stderr) without
    stopping it: the first thing to look at when a service seems stuck. A crash in native code
    (llama.cpp, FAISS: a segmentation fault) writes the Python stacks there too before the
    process dies, so the log says where instead of ending silently.
    """
    faulthandler.enable(all_threads=True)
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    async def _wrapper() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        await main()

    try:
        with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
            asyncio.run(_wrapper())
    except LinesideError as exc:  # a bad setting, a missing password file: say what, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def describe_decode_error(exc: Exception) -> str:
    """A one-line reason for a message that failed to decode, naming the field when msgspec knows it."""
    if isinstance(exc, msgspec.ValidationError | msgspec.DecodeError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


async def decoded(messages: AsyncIterator[Any], decoder: msgspec.msgpack.Decoder[Any], counters: Counters, log: Any) -> AsyncIterator[Any]:
    """The typed messages of an inbox; one that fails to decode is logged with the reason (the failing
    field when msgspec knows it), counted, and skipped: a bad message never stops the consumer."""
    async for m in messages:
        try:
            yield decoder.decode(m.payload)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError, RecursionError) as exc:
            log.warning("invalid_message", topic=m.topic, reason=describe_decode_error(exc), invalid_total=counters.inc("invalid"))


class Counters:
    """Per-service counters reported in log lines (messages handled, invalid, failed)."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    def inc(self, name: str) -> int:
        """Add one to ``name`` and return the new value."""
        self.values[name] = self.values.get(name, 0) + 1
        return self.values[name]


T = TypeVar("T")


class ComputeThread:
    """One thread that makes every call into a native model library (llama.cpp, the embedder, FAISS).

    Their OpenMP thread teams belong to the thread that calls them. Calls spread over asyncio's
    default executor (``asyncio.to_thread``) land on new threads, each gets a team of its own,
    and the idle teams' threads compete for the cores: llama.cpp generation took 7.7 s instead
    of 5.4 s after a few calls that way, and stays at 5.4 s on one dedicated thread (measured on
    this project's 2-core machine).
    """

    def __init__(self, name: str) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the compute thread, awaited."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
