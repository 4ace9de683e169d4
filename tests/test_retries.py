"""Both clients make a call again when it failed before its first chunk and making it again is
safe (``RetryPolicy``): any call the server refused before running its function, and a GET
function's call that failed with UNAVAILABLE or that grpc dropped. Never a POST function's call
that may have run, nor a call that delivered a chunk, nor one the caller cancelled.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from grpc_serverfn import (
    AsyncClient,
    Cancelled,
    Client,
    Limits,
    ResourceExhausted,
    RetryPolicy,
    ServerFnError,
    Unavailable,
)
from grpc_serverfn.observe import CallRecord
from grpc_serverfn.testing import RunningServer, run_in_thread
from tests import app
from tests.tcp_proxy import TcpProxy, proxy_to

PROMPTLY = 5.0

pytestmark = pytest.mark.parametrize("kind", ["sync", "async"])


class Records:
    """An observer keeping how every call ended: its function, and why it was refused."""

    def __init__(self) -> None:
        self.ended: list[tuple[str, str | None]] = []

    def call_started(self, record: CallRecord) -> None:
        return None

    def call_ended(self, record: CallRecord, token: Any) -> None:
        self.ended.append((record.function, record.refused))

    def of(self, function: str) -> list[str | None]:
        return [refused for name, refused in self.ended if name == function]


@pytest.fixture(scope="module")
def records() -> Records:
    return Records()


@pytest.fixture(scope="module")
def one_at_a_time(records: Records) -> Iterator[RunningServer]:
    """The test app serving one call at a time, its calls' ends recorded."""
    with run_in_thread(
        app.fns, limits=Limits(max_concurrent_calls=1), observers=[records]
    ) as running:
        yield running


@pytest.fixture
def proxy(server: RunningServer) -> Iterator[TcpProxy]:
    with proxy_to(server.target) as running:
        yield running


def wait(seconds: float, chunks: int = 1) -> dict[str, Any]:
    return {"probe": uuid.uuid4().hex, "seconds": seconds, "chunks": chunks}


def call_all(
    kind: str, target: str, function: str, data: Any, timeout: float = 30, **client: Any
) -> list[Any]:
    """Every chunk of one call through Client or AsyncClient (raising its error)."""
    if kind == "sync":
        with Client(target, **client) as sync_client:
            return list(sync_client.invoke(function, data, timeout=timeout))

    async def call_async() -> list[Any]:
        async with AsyncClient(target, **client) as async_client:
            chunks = async_client.invoke(function, data, timeout=timeout)
            return [chunk async for chunk in chunks]

    return asyncio.run(call_async())


@contextlib.contextmanager
def in_thread(target: Callable[[], object]) -> Iterator[None]:
    """Run ``target`` in a thread meanwhile; its failure fails the test."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as error:  # handed to the test's thread
            failed.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(PROMPTLY)
    if failed:
        raise failed[0]


def holding_the_slot(target: str, seconds: float) -> tuple[Client, Any]:
    """A call that takes the server's one slot (its first chunk has arrived) for ``seconds``."""
    holder = Client(target)
    stream = holder.invoke("wait_async", wait(seconds), timeout=30)
    assert next(stream) == 0
    return holder, stream


def test_a_call_refused_at_capacity_is_made_again_until_served(
    kind: str, one_at_a_time: RunningServer, records: Records
) -> None:
    holder, stream = holding_the_slot(one_at_a_time.target, 0.15)
    with holder:
        # A POST function: refused before it ran, so it may be made again all the same.
        data = wait(0)
        assert call_all(kind, one_at_a_time.target, "post_wait", data) == [0, -1]
        assert list(stream) == [-1]
    refusals = records.of("post_wait")
    assert refusals[-1] is None  # served
    assert set(refusals[:-1]) == {"SERVER_AT_CAPACITY"}
    assert 1 <= len(refusals[:-1]) <= 3
    records.ended.clear()


def test_without_a_retry_policy_the_refusal_is_raised_at_once(
    kind: str, one_at_a_time: RunningServer, records: Records
) -> None:
    holder, stream = holding_the_slot(one_at_a_time.target, 30)
    with holder:
        with pytest.raises(ResourceExhausted, match="limit of 1 concurrent calls"):
            call_all(kind, one_at_a_time.target, "echo_async", "x", retry=None)
        stream.cancel()
    assert records.of("echo_async") == ["SERVER_AT_CAPACITY"]
    records.ended.clear()


def test_refusals_past_the_policys_attempts_or_the_timeout_are_raised(
    kind: str, one_at_a_time: RunningServer, records: Records
) -> None:
    holder, stream = holding_the_slot(one_at_a_time.target, 30)
    target = one_at_a_time.target
    with holder:
        policy = RetryPolicy(attempts=2, backoff=0.01)
        with pytest.raises(ResourceExhausted):
            call_all(kind, target, "echo_async", "x", retry=policy)
        assert records.of("echo_async") == ["SERVER_AT_CAPACITY"] * 3  # the call and 2 more
        started = time.monotonic()
        many = RetryPolicy(attempts=100, backoff=0.05, max_backoff=0.05)
        with pytest.raises(ResourceExhausted):
            call_all(kind, target, "echo_async", "x", retry=many, timeout=0.5)
        assert time.monotonic() - started < 0.5 + 1.0  # within the timeout, plus slack
        stream.cancel()
    records.ended.clear()


def test_a_get_call_cut_before_its_first_chunk_is_made_again(kind: str, proxy: TcpProxy) -> None:
    data = wait(0.5, chunks=0)  # waits half a second, then yields -1

    def cut_once_it_runs() -> None:
        assert app.probe(data["probe"]).waiting.wait(PROMPTLY)
        proxy.drop()

    with in_thread(cut_once_it_runs):
        assert call_all(kind, proxy.address, "wait_async", data) == [-1]
    assert proxy.connections >= 2  # the call's, then the one it was made again on


def test_a_post_call_cut_before_its_first_chunk_is_not_made_again(
    kind: str, proxy: TcpProxy
) -> None:
    data = wait(5, chunks=0)

    def cut_once_it_runs() -> None:
        assert app.probe(data["probe"]).waiting.wait(PROMPTLY)
        proxy.drop()

    with in_thread(cut_once_it_runs), pytest.raises(Unavailable):
        call_all(kind, proxy.address, "post_wait", data)
    assert_not_started_again(data)


def test_a_get_call_cut_after_a_chunk_is_not_made_again(kind: str, proxy: TcpProxy) -> None:
    data = wait(5, chunks=1)
    if kind == "sync":
        with Client(proxy.address) as client:
            stream = client.invoke("wait_async", data)
            assert next(stream) == 0
            proxy.drop()
            with pytest.raises(Unavailable):
                next(stream)
    else:

        async def cut_after_a_chunk() -> None:
            async with AsyncClient(proxy.address) as client:
                stream = client.invoke("wait_async", data)
                assert await anext(stream) == 0
                proxy.drop()
                with pytest.raises(Unavailable):
                    await anext(stream)

        asyncio.run(cut_after_a_chunk())
    assert_not_started_again(data)


def test_a_call_the_caller_cancelled_is_not_made_again(kind: str, server: RunningServer) -> None:
    data = wait(5, chunks=0)
    if kind == "sync":
        with Client(server.target) as client:
            stream = client.invoke("wait_async", data)
            assert app.probe(data["probe"]).waiting.wait(PROMPTLY)
            stream.cancel()
            with pytest.raises(Cancelled):
                list(stream)
    else:

        async def cancel_then_read() -> None:
            async with AsyncClient(server.target) as client:
                stream = client.invoke("wait_async", data)
                assert await asyncio.to_thread(app.probe(data["probe"]).waiting.wait, PROMPTLY)
                stream.cancel()
                with pytest.raises(asyncio.CancelledError):  # grpc.aio's, for a local cancel
                    [chunk async for chunk in stream]

        asyncio.run(cancel_then_read())
    assert_not_started_again(data)


def assert_not_started_again(data: dict[str, Any]) -> None:
    """The call's function ran once: it has ended, and nothing starts it again."""
    probe = app.probe(data["probe"])
    assert probe.cleaned_up.wait(PROMPTLY)
    probe.started.clear()
    time.sleep(0.3)  # longer than a retry's first backoff
    assert not probe.started.is_set()


def test_calls_grpc_dropped_are_made_again_for_get_functions_only(kind: str) -> None:
    """Calls past the server's pending limit, which grpc cancels before the server sees them:
    GET ones are made again once the server takes calls up again, POST ones are not."""
    with run_in_thread(app.fns, limits=Limits(max_pending_calls=5)) as running:
        target = running.target
        get = burst_while_the_loop_is_blocked(kind, target, "wait_async")
        post = burst_while_the_loop_is_blocked(kind, target, "post_wait")
    assert get == {"OK": 60}
    assert post["CANCELLED"] >= 40, post
    assert post["OK"] + post["CANCELLED"] == 60, post


def burst_while_the_loop_is_blocked(
    kind: str, target: str, function: str
) -> collections.Counter[str]:
    """60 calls of ``function`` made while the server's event loop is blocked for 1 s; how
    they ended (sync calls from 60 threads, async ones from one loop)."""
    hog = wait(1.0)  # long enough for 60 threads to start their calls on a busy machine
    data = {"probe": uuid.uuid4().hex, "seconds": 0, "chunks": 1}
    # More attempts than the default: with room for 5 waiting calls, most come back more
    # than once before the server has taken up the rest.
    retry = RetryPolicy(attempts=10, backoff=0.05, max_backoff=0.2)

    def ended(call: Any) -> str:
        try:
            call()
        except ServerFnError as error:
            return str(error.code.name)
        return "OK"

    if kind == "sync":
        with Client(target, retry=retry) as client, in_thread(lambda: client.call("hog_loop", hog)):
            assert app.probe(hog["probe"]).started.wait(PROMPTLY)
            with ThreadPoolExecutor(60) as pool:
                calls = [lambda: list(client.invoke(function, data))] * 60
                return collections.Counter(pool.map(ended, calls))

    async def burst() -> list[str]:
        async with AsyncClient(target, retry=retry) as client:
            hogging = asyncio.ensure_future(client.call("hog_loop", hog))
            assert await asyncio.to_thread(app.probe(hog["probe"]).started.wait, PROMPTLY)

            async def one() -> str:
                try:
                    [chunk async for chunk in client.invoke(function, data)]
                except ServerFnError as error:
                    return str(error.code.name)
                return "OK"

            results = await asyncio.gather(*(one() for _ in range(60)))
            await hogging
            return list(results)

    return collections.Counter(asyncio.run(burst()))
