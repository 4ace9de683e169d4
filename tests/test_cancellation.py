"""Cancellation, deadlines, backpressure and a blocking handler next to an async one.

"Promptly" below is a generous bound (PROMPTLY seconds); what matters is that cleanup runs
because the call ended, not because the garbage collector got round to it: the cycle
collector is off while these tests wait.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import uuid
from collections.abc import Iterator

import grpc
import pytest

from grpc_serverfn import AsyncClient, Client, DeadlineExceeded
from grpc_serverfn.testing import RunningServer
from tests import app
from tests.conftest import Caller

PROMPTLY = 5.0


@pytest.fixture(autouse=True)
def no_cycle_collector() -> Iterator[None]:
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def new_probe() -> tuple[str, app.Probe]:
    key = uuid.uuid4().hex
    return key, app.probe(key)


@pytest.mark.parametrize("function", ["wait_async", "wait_sync"])
def test_breaking_out_of_a_sync_loop_runs_the_handlers_cleanup(
    server: RunningServer, function: str
) -> None:
    key, probe = new_probe()
    with Client(server.target) as client:
        for chunk in client.invoke(function, {"probe": key, "chunks": 2}):
            assert chunk == 0
            break
        assert probe.cleaned_up.wait(PROMPTLY), "the handler's finally did not run"
        # The channel is still good for the next call.
        assert client.call("echo_async", "after") == "after"


@pytest.mark.parametrize("function", ["wait_async", "wait_sync"])
async def test_breaking_out_of_an_async_loop_runs_the_handlers_cleanup(
    server: RunningServer, function: str
) -> None:
    key, probe = new_probe()
    async with AsyncClient(server.target) as client:
        async for chunk in client.invoke(function, {"probe": key, "chunks": 2}):
            assert chunk == 0
            break
        assert await asyncio.to_thread(probe.cleaned_up.wait, PROMPTLY)
        assert await client.call("echo_async", "after") == "after"


def test_leaving_the_with_block_of_a_stream_cancels_it(server: RunningServer) -> None:
    key, probe = new_probe()
    with Client(server.target) as client:
        with client.invoke("wait_async", {"probe": key, "chunks": 3}) as stream:
            assert next(stream) == 0
        # `stream` is still referenced here: the with block, not the GC, ended the call.
        assert probe.cleaned_up.wait(PROMPTLY)
        del stream


async def test_leaving_async_with_of_a_stream_cancels_it(server: RunningServer) -> None:
    key, probe = new_probe()
    async with AsyncClient(server.target) as client:
        async with client.invoke("wait_async", {"probe": key}) as stream:
            assert await anext(stream) == 0
        assert await asyncio.to_thread(probe.cleaned_up.wait, PROMPTLY)
        del stream


def test_cancel_ends_the_call_and_the_handler_sees_it(server: RunningServer) -> None:
    key, probe = new_probe()
    with Client(server.target) as client:
        stream = client.invoke("wait_async", {"probe": key})
        assert next(stream) == 0
        assert probe.waiting.wait(PROMPTLY)
        stream.cancel()
        assert probe.cleaned_up.wait(PROMPTLY)
        assert probe.cancelled_seen.is_set()


def test_a_sync_handler_sees_ctx_cancelled_and_stops(server: RunningServer) -> None:
    key, probe = new_probe()
    with Client(server.target) as client:
        stream = client.invoke("wait_sync", {"probe": key})
        assert next(stream) == 0
        assert probe.waiting.wait(PROMPTLY)
        stream.cancel()
        assert probe.cancelled_seen.wait(PROMPTLY), "ctx.cancelled never became true"
        assert probe.cleaned_up.wait(PROMPTLY)


def test_an_endless_sync_generator_stops_at_its_next_yield(server: RunningServer) -> None:
    key, probe = new_probe()
    with Client(server.target) as client:
        for index, chunk in enumerate(client.invoke("sync_endless", {"probe": key})):
            if index == 20:
                break
            assert chunk == index
        assert probe.cleaned_up.wait(PROMPTLY)
        produced = probe.produced
        time.sleep(0.2)
        assert probe.produced == produced, "the generator kept running after cleanup"


@pytest.mark.parametrize("function", ["deadline_probe"])
def test_a_deadline_ends_the_call_and_the_handler_saw_time_shrink(
    invoke: Caller, function: str
) -> None:
    key, probe = new_probe()
    outcome = invoke(function, {"probe": key, "seconds": 30}, timeout=1.0)
    assert isinstance(outcome.error, DeadlineExceeded)
    assert outcome.error.code is grpc.StatusCode.DEADLINE_EXCEEDED
    first, second = outcome.chunks
    # The grpc-timeout header rounds the deadline up, so the server may see a little more.
    assert 0 < second < first <= 1.1
    assert probe.cleaned_up.wait(PROMPTLY)


def test_without_a_deadline_time_remaining_is_none(invoke: Caller) -> None:
    (info,) = invoke("context_info").chunks
    assert info["time_remaining"] is None


def test_a_blocking_sync_handler_does_not_delay_another_calls_chunks(
    server: RunningServer,
) -> None:
    blocking_done = threading.Event()

    def block() -> None:
        with Client(server.target) as client:
            assert client.call("blocking_sleep", 3.0) == "slept"
        blocking_done.set()

    blocker = threading.Thread(target=block)
    blocker.start()
    try:
        time.sleep(0.3)  # let the blocking call reach its handler

        async def stream_while_blocked() -> list[int]:
            async with AsyncClient(server.target) as client:
                return [chunk async for chunk in client.invoke("count_async", {"n": 5})]

        assert asyncio.run(stream_while_blocked()) == [0, 1, 2, 3, 4]
        assert not blocking_done.is_set(), "the stream waited for the blocking handler"
    finally:
        blocker.join()
    assert blocking_done.is_set()


# Unbounded, the generator would have produced hundreds of thousands of chunks by then; flow
# control lets through the HTTP/2 windows' worth (a few MiB; ~4,200 chunks here), plus, when
# coalescing, at most one batch waiting and one being written.
@pytest.mark.parametrize(("coalesce", "bound"), [(False, 12_000), (True, 20_000)])
def test_a_slow_reader_holds_the_generator_back(
    server: RunningServer, coalesce: bool, bound: int
) -> None:
    """Backpressure: the handler advances only as the transport accepts chunks."""
    key, probe = new_probe()
    read = 0
    with Client(server.target, coalesce=coalesce) as client:
        for chunk in client.invoke("endless", {"probe": key}):
            assert len(chunk) == 1024
            read += 1
            if read == 30:
                break
            time.sleep(0.05)
        ahead = probe.produced - read
        assert probe.cleaned_up.wait(PROMPTLY)
    assert ahead < bound, f"the generator ran {ahead} chunks ahead of the reader"


@pytest.mark.parametrize("coalesce", [True, False], ids=["coalesced", "one-per-message"])
@pytest.mark.parametrize("ending", ["cancel", "deadline"])
def test_a_handler_that_swallows_cancellation_is_still_ended(
    server: RunningServer, coalesce: bool, ending: str
) -> None:
    """grpc cancels a call's task once, and the handler swallowed that: the server cancels it
    again until it gives in (its producer task when coalescing, the call's task otherwise)."""
    key, probe = new_probe()
    with Client(server.target, coalesce=coalesce) as client:
        timeout = 1.0 if ending == "deadline" else None
        stream = client.invoke("stubborn", {"probe": key}, timeout=timeout)
        assert next(stream) == 0
        assert probe.waiting.wait(PROMPTLY)
        if ending == "cancel":
            stream.cancel()
        else:
            with pytest.raises(DeadlineExceeded):
                next(stream)
        assert probe.cancelled_seen.wait(PROMPTLY)
        # It swallowed the first cancellation; the server cancels it again until it gives in.
        assert probe.cleaned_up.wait(PROMPTLY), "the call lingered after its cancellation"
        assert client.call("echo_async", "next") == "next"
