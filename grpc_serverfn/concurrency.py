"""Run any kind of server function as an async iterator without blocking the event loop.

Sync functions run in a worker thread; sync generators are stepped in one, one ``next()`` per
step, with ``StopIteration`` turned into a sentinel so it never crosses a future. When the
call ends early the generator is closed: at once if it is suspended at a ``yield``, or by the
worker thread right after its current step returns, so it stops at its next yield and its
``finally`` runs without tying up another thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncIterator, Callable, Generator
from concurrent.futures import Executor
from typing import Any

from .registry import Kind, ServerFunction

__all__ = ["iterate_in_threadpool", "open_handler"]

_DONE = object()


def open_handler(
    function: ServerFunction, arguments: dict[str, Any], executor: Executor | None
) -> AsyncIterator[Any]:
    """Start ``function`` and return its chunks as an async iterator."""
    kind = function.kind
    if kind is Kind.ASYNC_GENERATOR:
        stream: AsyncIterator[Any] = function.fn(**arguments)
        return stream
    if kind is Kind.GENERATOR:
        return iterate_in_threadpool(function.fn(**arguments), executor)
    if kind is Kind.COROUTINE:
        return _single(function.fn(**arguments))
    return _single(_run_in_thread(function.fn, arguments, executor))


async def _single(result: Any) -> AsyncIterator[Any]:
    yield await result


async def _run_in_thread(
    fn: Callable[..., Any], arguments: dict[str, Any], executor: Executor | None
) -> Any:
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(
        executor, lambda: context.run(fn, **arguments)
    )


class _Stepper:
    """Steps a sync generator from worker threads and closes it at a safe moment."""

    __slots__ = ("_close_requested", "_context", "_generator", "_lock", "_stepping")

    def __init__(self, generator: Generator[Any, None, None]) -> None:
        self._generator = generator
        self._context = contextvars.copy_context()
        self._lock = threading.Lock()
        self._stepping = False
        self._close_requested = False

    def begin_step(self) -> None:
        with self._lock:
            self._stepping = True

    def step(self) -> Any:
        """Runs in a worker thread: one ``next()``; closes the generator if asked meanwhile."""
        try:
            value = self._context.run(next, self._generator, _DONE)
        finally:
            with self._lock:
                self._stepping = False
                close_now = self._close_requested
        if close_now:
            self._context.run(self._generator.close)
            return _DONE
        return value

    def request_close(self) -> bool:
        """Ask for the generator to close; True when the caller must close it (no step running)."""
        with self._lock:
            self._close_requested = True
            return not self._stepping

    def close(self) -> None:
        self._context.run(self._generator.close)


async def iterate_in_threadpool(
    generator: Generator[Any, None, None], executor: Executor | None = None
) -> AsyncIterator[Any]:
    """Iterate a sync generator from async code, each step in a worker thread."""
    loop = asyncio.get_running_loop()
    stepper = _Stepper(generator)
    exhausted = False
    try:
        while True:
            stepper.begin_step()
            value = await loop.run_in_executor(executor, stepper.step)
            if value is _DONE:
                exhausted = True
                return
            yield value
    finally:
        # Exhausted or failed generators are finished already; otherwise close it now if no
        # step is running, or let the running step close it when it reaches its next yield.
        if not exhausted and stepper.request_close():
            try:
                await loop.run_in_executor(executor, stepper.close)
            except RuntimeError:  # the executor is shut down (the server stopped): close anyway
                threading.Thread(target=stepper.close, name="serverfn-close", daemon=True).start()
