"""A sync generator stepped in worker threads (``grpc_serverfn._concurrency``), driven directly.

The hop between a worker thread and the event loop is what a sync generator costs, so the pipe
makes it per batch: these tests hold it to that, and to what batching must not give up: the
bound on read-ahead, a blocking generator's chunks delivered one by one as they come, prompt
cancellation with the ``finally`` run in a worker thread, errors after the chunks before them,
contextvars, and streams that share a saturated pool taking turns.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from grpc_serverfn._concurrency import JOB_STEPS, READ_AHEAD, iterate_in_threadpool

PROMPTLY = 5.0  # seconds: a generous bound for what should happen at once
MAIN = threading.get_ident()


class CountingExecutor(ThreadPoolExecutor):
    """Counts the jobs submitted to it: one per hop from the loop to a worker thread."""

    def __init__(self, max_workers: int = 4) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix="test-worker")
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def executor() -> Iterator[CountingExecutor]:
    pool = CountingExecutor()
    yield pool
    pool.shutdown(wait=True)


def count_posts(loop: asyncio.AbstractEventLoop) -> list[int]:
    """Count the loop's ``call_soon_threadsafe`` calls: one per hop from a thread to the loop."""
    posts = [0]
    original = loop.call_soon_threadsafe

    def counted(callback: Callable[..., Any], *args: Any, **kwargs: Any) -> asyncio.Handle:
        posts[0] += 1
        return original(callback, *args, **kwargs)

    loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
    return posts


async def test_a_fast_generator_hops_per_batch_not_per_chunk(executor: CountingExecutor) -> None:
    chunks = 2_000
    posts = count_posts(asyncio.get_running_loop())
    received = []
    async for value in iterate_in_threadpool(iter(range(chunks)), executor):
        received.append(value)
        await asyncio.sleep(0)  # a send that completes at once
    assert received == list(range(chunks))
    # Per chunk, the old pipe made one hop each way and a job per eight chunks.
    assert executor.submitted <= chunks / 4, executor.submitted
    assert posts[0] <= chunks / 4, posts[0]


async def test_a_short_stream_is_one_job(executor: CountingExecutor) -> None:
    received = [value async for value in iterate_in_threadpool(iter("abc"), executor)]
    assert received == ["a", "b", "c"]
    assert executor.submitted == 1  # no job after the end, none to close an ended generator


async def test_the_generator_runs_at_most_read_ahead_values_ahead_of_a_slow_reader(
    executor: CountingExecutor,
) -> None:
    produced = 0

    def firehose() -> Iterator[int]:
        nonlocal produced
        while True:
            produced += 1
            yield produced

    taken = 0
    most_ahead = 0
    stream = iterate_in_threadpool(firehose(), executor)
    async for _ in stream:
        taken += 1
        await asyncio.sleep(0.002)  # time for the worker to run as far ahead as it may
        most_ahead = max(most_ahead, produced - taken)
        if taken == 200:
            break
    await stream.aclose()
    assert READ_AHEAD // 2 <= most_ahead <= READ_AHEAD
    assert executor.submitted < 200 / 4  # and a slow reader still gets batches


async def test_a_blocking_generator_delivers_each_chunk_as_it_comes(
    executor: CountingExecutor,
) -> None:
    yielded_at: list[float] = []

    def slow_io() -> Iterator[int]:
        for i in range(5):
            yielded_at.append(time.monotonic())
            yield i
            time.sleep(0.2)

    delays = []
    async for i in iterate_in_threadpool(slow_io(), executor):
        delays.append(time.monotonic() - yielded_at[i])
    assert len(delays) == 5
    # Each chunk arrives while the generator sleeps, not when a batch has filled.
    assert max(delays) < 0.15, delays


async def test_cancelling_stops_a_blocking_generator_at_its_next_yield(
    executor: CountingExecutor,
) -> None:
    produced = 0
    three = threading.Event()
    finally_ran = threading.Event()
    finally_thread: list[int] = []

    def endless() -> Iterator[int]:
        nonlocal produced
        try:
            while True:
                produced += 1
                if produced == 3:
                    three.set()
                yield produced
                time.sleep(0.05)
        finally:
            finally_thread.append(threading.get_ident())
            finally_ran.set()

    async def consume() -> None:
        async for _ in iterate_in_threadpool(endless(), executor):
            pass

    task = asyncio.create_task(consume())
    assert await asyncio.to_thread(three.wait, PROMPTLY)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(finally_ran.wait, PROMPTLY)
    assert time.monotonic() - started < 1.0
    assert finally_thread[0] != MAIN  # the generator is closed in a worker thread
    stopped_at = produced
    await asyncio.sleep(0.2)
    assert produced == stopped_at, "the generator kept running after it was closed"


async def test_closing_between_jobs_closes_the_generator_in_a_worker_thread(
    executor: CountingExecutor,
) -> None:
    finally_thread: list[int] = []

    def numbers() -> Iterator[int]:
        try:
            yield from range(1_000)
        finally:
            finally_thread.append(threading.get_ident())

    stream = iterate_in_threadpool(numbers(), executor)
    assert await anext(stream) == 0
    await asyncio.sleep(0.05)  # the job has filled the buffer and ended
    await stream.aclose()
    assert finally_thread
    assert finally_thread[0] != MAIN


async def test_an_error_arrives_after_the_chunks_before_it(executor: CountingExecutor) -> None:
    def failing() -> Iterator[int]:
        yield from range(40)
        raise ValueError("mid-stream")

    received = []

    async def read() -> None:
        async for value in iterate_in_threadpool(failing(), executor):
            received.append(value)
            await asyncio.sleep(0)

    with pytest.raises(ValueError, match="mid-stream"):
        await read()
    assert received == list(range(40))


async def test_the_generator_runs_in_a_copy_of_the_callers_context(
    executor: CountingExecutor,
) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("caller")

    def reads_and_sets() -> Iterator[str]:
        for i in range(3 * JOB_STEPS):  # across several jobs
            yield var.get()
            var.set(f"generator {i}")

    received = [value async for value in iterate_in_threadpool(reads_and_sets(), executor)]
    assert received == ["caller"] + [f"generator {i}" for i in range(3 * JOB_STEPS - 1)]
    assert var.get() == "caller"  # the generator's changes stay in its copy


async def test_streams_sharing_a_saturated_pool_take_turns() -> None:
    progress = {"a": 0, "b": 0}
    both = {name: threading.Event() for name in progress}

    def endless(name: str) -> Iterator[int]:
        while True:
            progress[name] += 1
            if progress[name] == 2 * JOB_STEPS:
                both[name].set()
            yield progress[name]
            time.sleep(0.001)  # slow enough that the reader keeps up: jobs never fill up

    async def read(stream: AsyncIterator[int]) -> None:
        async for _ in stream:
            pass

    with ThreadPoolExecutor(max_workers=1) as pool:
        tasks = [
            asyncio.create_task(read(iterate_in_threadpool(endless(name), pool))) for name in "ab"
        ]
        for name in progress:
            await asyncio.to_thread(both[name].wait, PROMPTLY)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert min(progress.values()) >= 2 * JOB_STEPS, progress


async def test_a_shut_down_executor_fails_the_stream_and_still_closes_the_generator() -> None:
    closed = threading.Event()
    finally_thread: list[int] = []

    def numbers() -> Iterator[int]:
        try:
            yield from range(1_000)
        finally:
            finally_thread.append(threading.get_ident())
            closed.set()

    pool = ThreadPoolExecutor(max_workers=1)
    stream = iterate_in_threadpool(numbers(), pool)
    received = [await anext(stream)]
    pool.shutdown(wait=True)  # the server stopped; the job that was running has ended

    async def read() -> None:
        async for value in stream:
            received.append(value)

    with pytest.raises(RuntimeError):
        await read()
    assert received == list(range(len(received)))
    assert await asyncio.to_thread(closed.wait, PROMPTLY)
    assert finally_thread[0] != MAIN
