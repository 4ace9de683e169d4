"""The sweep that re-cancels a call whose handler swallowed its cancellation: paced by a
ticker thread that ends when nothing is watched, and that a later event loop starts again."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from grpc_serverfn._sending import _IDLE_SWEEPS, Stragglers


def _tickers() -> int:
    return sum(thread.name == "serverfn-stragglers" for thread in threading.enumerate())


async def _swallow_once(stragglers: Stragglers) -> int:
    """A call whose handler swallows the first cancellation; returns how many it saw."""
    seen = 0

    async def call() -> None:
        nonlocal seen
        task = stragglers.watch("swallower")
        try:
            while True:
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    seen += 1
                    if seen == 2:
                        raise
        finally:
            stragglers.forget(task)

    task = asyncio.create_task(call())
    await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 3)
    return seen


def test_a_swallowed_cancellation_is_repeated_on_every_loop_the_sweeps_serve() -> None:
    stragglers = Stragglers()
    assert asyncio.run(_swallow_once(stragglers)) == 2
    # The first loop is closed; its ticker thread ends and a call on a new loop gets a new one.
    assert asyncio.run(_swallow_once(stragglers)) == 2


def test_the_ticker_thread_ends_once_no_call_is_watched() -> None:
    async def one_call() -> None:
        stragglers = Stragglers()
        task = stragglers.watch("short")
        assert _tickers() >= 1
        stragglers.forget(task)
        # Eight sweeps 0.25 s apart find nothing to watch, and the ticker ends.
        await asyncio.sleep(_IDLE_SWEEPS * 0.25 + 1)
        assert _tickers() == 0

    asyncio.run(one_call())
