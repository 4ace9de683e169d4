"""Run any kind of server function as an async iterator without blocking the event loop.

Sync functions run in a worker thread. Sync generators run in worker-thread jobs that hand
each value to the loop as soon as it exists, at most ``READ_AHEAD`` values ahead of the
consumer (``next(generator, sentinel)``, so ``StopIteration`` never crosses a thread). When
the call ends early the generator is closed: at once if no job is running, or by the job right
after its current ``next()`` returns, so it stops at its next yield and its ``finally`` runs
without tying up another thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
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


READ_AHEAD = 16
"""How many chunks a sync generator may run ahead of the chunks sent (bounded backpressure)."""


class _Pipe:
    """Runs a sync generator in worker-thread jobs and hands its values to the event loop.

    A job calls ``next()`` up to ``room`` times, passing each value to the loop the moment it
    exists (so a value is never held back), then ends, so a slow reader holds no thread. The
    loop starts a new job when the values it holds run low. Asked to stop, a job closes the
    generator right after its current ``next()`` returns: it stops at its next yield.
    """

    __slots__ = (
        "_buffer",
        "_context",
        "_executor",
        "_finished",
        "_generator",
        "_in_job",
        "_job_running",
        "_lock",
        "_loop",
        "_stop",
        "_waiter",
    )

    def __init__(
        self,
        generator: Generator[Any, None, None],
        loop: asyncio.AbstractEventLoop,
        executor: Executor | None,
    ) -> None:
        self._generator = generator
        self._context = contextvars.copy_context()
        self._loop = loop
        self._executor = executor
        self._buffer: collections.deque[tuple[int, Any]] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._job_running = False  # as the loop sees it
        self._finished = False
        self._lock = threading.Lock()
        self._in_job = False  # as the worker threads see it, under the lock
        self._stop = False

    # --- the worker thread's side -------------------------------------------------------

    def _job(self, room: int) -> None:
        post = self._loop.call_soon_threadsafe
        try:
            for _ in range(room):
                if self._stop:
                    return
                try:
                    value = self._context.run(next, self._generator, _DONE)
                except BaseException as error:  # handed to the loop, raised there
                    post(self._receive, _FAILED, error)
                    return
                if self._stop:
                    return  # the value is dropped: the call is over
                if value is _DONE:
                    post(self._receive, _ENDED, None)
                    return
                post(self._receive, _VALUE, value)
        except RuntimeError:
            return  # the event loop is closed: nobody is listening any more
        finally:
            # Under the lock, so that a stop asked for now is either seen here or left to
            # aclose(), never lost in between.
            with self._lock:
                self._in_job = False
                stop = self._stop
            if stop:
                self._context.run(self._generator.close)
            with contextlib.suppress(RuntimeError):
                post(self._job_ended)

    # --- the event loop's side -----------------------------------------------------------

    def _receive(self, kind: int, value: Any) -> None:
        self._buffer.append((kind, value))
        self._wake()

    def _job_ended(self) -> None:
        self._job_running = False
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _start_job(self) -> None:
        self._job_running = True
        with self._lock:
            self._in_job = True
        self._loop.run_in_executor(self._executor, self._job, READ_AHEAD - len(self._buffer))

    async def get(self) -> Any:
        """The next value, or ``_DONE``; raises what the generator raised."""
        while not self._buffer:
            if not self._job_running:
                self._start_job()
            self._waiter = self._loop.create_future()
            await self._waiter
        kind, value = self._buffer.popleft()
        if kind == _VALUE:
            if not self._job_running and len(self._buffer) < READ_AHEAD // 2:
                self._start_job()  # produce the next values while this one is sent
            return value
        self._finished = True
        if kind == _FAILED:
            raise value
        return _DONE

    async def aclose(self) -> None:
        """Stop the generator: now if no job runs, else when its current ``next()`` returns."""
        if self._finished:
            return
        with self._lock:
            self._stop = True
            in_job = self._in_job
        if in_job:
            return  # the job closes it when its current next() returns
        try:
            await self._loop.run_in_executor(
                self._executor, self._context.run, self._generator.close
            )
        except RuntimeError:  # the executor is shut down (the server stopped): close anyway
            threading.Thread(
                target=self._context.run,
                args=(self._generator.close,),
                name="serverfn-close",
                daemon=True,
            ).start()


_VALUE, _ENDED, _FAILED = 0, 1, 2


async def iterate_in_threadpool(
    generator: Generator[Any, None, None], executor: Executor | None = None
) -> AsyncIterator[Any]:
    """Iterate a sync generator from async code without blocking the loop; it runs at most
    ``READ_AHEAD`` values ahead of the consumer."""
    pipe = _Pipe(generator, asyncio.get_running_loop(), executor)
    try:
        while (value := await pipe.get()) is not _DONE:
            yield value
    finally:
        await pipe.aclose()
