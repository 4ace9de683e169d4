"""Run any kind of server function as an async iterator without blocking the event loop.

Sync functions run in a worker thread. Sync generators run in worker-thread jobs that step the
generator into a buffer at most ``READ_AHEAD`` values ahead of the consumer
(``next(generator, sentinel)``, so ``StopIteration`` never crosses a thread); the loop reads
the buffer without a hop, and a job wakes the loop only when it is waiting for a value (so a
value is never held back for company). When the call ends early the generator is closed: at
once if no job is running, or by the job right after its current ``next()`` returns, so it
stops at its next yield and its ``finally`` runs without tying up another thread.
"""

from __future__ import annotations

import asyncio
import collections
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

_REFILL_BELOW = READ_AHEAD // 2
"""The loop starts a job when the values it holds fall below this and no job runs."""

JOB_STEPS = 4 * READ_AHEAD
"""The most ``next()`` calls one job makes before it gives its thread back (so the streams that
share a saturated pool take turns), even when the reader keeps up."""

_VALUE, _ENDED, _FAILED = 0, 1, 2


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Pipe:
    """Runs a sync generator in worker-thread jobs and hands its values to the event loop.

    The hop between the threads is what a sync generator costs, so it is made per batch, not
    per value: a job steps the generator into a buffer the loop reads without a hop, and wakes
    the loop (``call_soon_threadsafe``) only when the loop is waiting for a value, at once, so
    a slow generator's value is never held back. A job ends when the buffer holds
    ``READ_AHEAD`` values (a slow reader holds no thread and bounds the run-ahead), when the
    generator ends, or after ``JOB_STEPS`` steps; the loop starts the next one when the values
    it holds run low. Asked to stop, a job closes the generator right after its current
    ``next()`` returns: it stops at its next yield.

    The buffer, ``_waiter`` and the flags are shared under ``_lock``; the loop pops the buffer
    without it (``deque`` is thread-safe) and takes it only to wait or to start a job.
    """

    __slots__ = (
        "_buffer",
        "_context",
        "_executor",
        "_exhausted",
        "_generator",
        "_in_job",
        "_lock",
        "_loop",
        "_stop",
        "_waiter",
        "finished",
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
        self.finished = False  # the loop has taken the generator's end (the loop's own)
        self._lock = threading.Lock()
        # Under the lock:
        self._waiter: asyncio.Future[None] | None = None  # the loop waits for a value
        self._in_job = False  # a job runs, or is queued to
        self._exhausted = False  # the generator has ended (returned or raised)
        self._stop = False  # the call is over: close the generator

    # --- the worker thread's side -------------------------------------------------------

    def _job(self) -> None:
        generator, context, buffer, lock = (
            self._generator,
            self._context,
            self._buffer,
            self._lock,
        )
        post = self._loop.call_soon_threadsafe
        for step in range(JOB_STEPS, 0, -1):
            if self._stop:  # read without the lock: it is only ever set; checked again below
                break
            try:
                value = context.run(next, generator, _DONE)
                kind = _ENDED if value is _DONE else _VALUE
            except BaseException as error:  # handed to the loop, raised there
                value, kind = error, _FAILED
            with lock:
                if self._stop:
                    break  # the value is dropped: the call is over
                buffer.append((kind, value))
                waiter, self._waiter = self._waiter, None
                more = kind == _VALUE and step > 1 and len(buffer) < READ_AHEAD
                if not more:
                    self._in_job = False
                    self._exhausted = kind != _VALUE
            if waiter is not None:
                try:
                    post(_wake, waiter)
                except RuntimeError:
                    more = False  # the event loop is closed: nobody is listening any more
            if not more:
                return
        # Stopped. Under the lock, so that a stop asked for now is either seen here or left
        # to aclose(), never lost in between.
        with lock:
            self._in_job = False
            stop = self._stop
        if stop:
            context.run(generator.close)

    # --- the event loop's side -----------------------------------------------------------

    def refill(self) -> None:
        """Start a job if none runs (the values the loop holds run low)."""
        with self._lock:
            if self._in_job or self._exhausted or self._stop:
                return
            self._in_job = True
        self._submit()

    def wait(self) -> asyncio.Future[None] | None:
        """A future done when the buffer has a value (None: it has one now), starting a job
        if none runs."""
        with self._lock:
            if self._buffer:
                return None
            waiter = self._waiter = self._loop.create_future()
            if self._in_job:
                return waiter
            self._in_job = True
        self._submit()
        return waiter

    def _submit(self) -> None:
        try:
            if self._executor is None:
                self._loop.run_in_executor(None, self._job)
            else:
                self._executor.submit(self._job)
        except BaseException:  # the executor is shut down: no job runs
            with self._lock:
                self._in_job = False
                self._waiter = None
            raise

    async def aclose(self) -> None:
        """Stop the generator: now if no job runs, else when its current ``next()`` returns."""
        if self.finished:
            return
        with self._lock:
            self._stop = True
            if self._in_job or self._exhausted:
                return  # the job closes it when its current next() returns, or it has ended
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


async def iterate_in_threadpool(
    generator: Generator[Any, None, None], executor: Executor | None = None
) -> AsyncIterator[Any]:
    """Iterate a sync generator from async code without blocking the loop; it runs at most
    ``READ_AHEAD`` values ahead of the consumer."""
    pipe = _Pipe(generator, asyncio.get_running_loop(), executor)
    buffer = pipe._buffer
    try:
        while True:
            if not buffer:
                waiter = pipe.wait()
                if waiter is not None:
                    await waiter
                continue
            kind, value = buffer.popleft()
            if kind != _VALUE:
                pipe.finished = True
                if kind == _FAILED:
                    raise value
                return
            if len(buffer) < _REFILL_BELOW and not pipe._in_job:
                pipe.refill()  # produce the next values while this one is sent
            yield value
    finally:
        await pipe.aclose()
