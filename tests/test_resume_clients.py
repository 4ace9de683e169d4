"""The Python clients resume a resumable stream by themselves when its connection is cut (a
TCP proxy in the test drops it mid-stream), so the caller's loop sees every chunk exactly once,
in order; across replicas through Redis too. Other functions' calls are not retried."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator

import pytest

from grpc_serverfn import AsyncClient, Client, NotFound, ResumePolicy, Unavailable
from grpc_serverfn.testing import RunningServer
from tests import app
from tests.processes import ServerProcess, serving
from tests.tcp_proxy import TcpProxy, proxy_to

COUNT = 60


@pytest.fixture
def proxy(server: RunningServer) -> Iterator[TcpProxy]:
    with proxy_to(server.target) as running:
        yield running


def test_client_resumes_after_the_connection_drops(proxy: TcpProxy) -> None:
    key = f"resume-{uuid.uuid4()}"
    with Client(proxy.address) as client:
        stream = client.invoke("resumable_ticks", {"probe": key, "count": COUNT, "seconds": 0.01})
        ticks = []
        for chunk in stream:
            ticks.append(chunk["tick"])
            if len(ticks) in (10, 30):
                proxy.drop()
        assert stream.stream_id() is not None
    assert ticks == list(range(COUNT))
    assert proxy.connections >= 3  # the first connection and one per resume
    assert not app.probe(key).cancelled_seen.is_set(), "the producer was stopped, not resumed"


async def test_async_client_resumes_after_the_connection_drops(proxy: TcpProxy) -> None:
    async with AsyncClient(proxy.address, coalesce=False) as client:
        stream = client.invoke("resumable_ticks", {"count": COUNT, "seconds": 0.01})
        ticks = []
        async for chunk in stream:
            ticks.append(chunk["tick"])
            if len(ticks) in (5, 25):
                proxy.drop()
        assert await stream.stream_id() is not None
    assert ticks == list(range(COUNT))
    assert proxy.connections >= 3


def test_a_stream_id_picks_a_stream_up_in_a_new_client(server: RunningServer) -> None:
    with Client(server.target) as first:
        stream = first.invoke("resumable_ticks", {"count": 10, "seconds": 0})
        head = [next(stream)["tick"] for _ in range(4)]
        stream_id = stream.stream_id()
        stream.cancel()
    assert stream_id is not None
    with Client(server.target) as second:
        rest = [chunk["tick"] for chunk in second.resume(stream_id, 4)]
        assert head + rest == list(range(10))
        assert not second.cancel_stream(stream_id)  # it has finished
        with pytest.raises(NotFound):
            list(second.resume("0" * 32))
        with pytest.raises(NotFound):
            second.cancel_stream("0" * 32)


async def test_async_cancel_stream_stops_a_running_stream(server: RunningServer) -> None:
    async with AsyncClient(server.target) as client:
        stream = client.invoke("resumable_ticks", {"count": 100_000, "seconds": 0.01})
        assert (await anext(stream))["tick"] == 0
        stream_id = await stream.stream_id()
        assert stream_id is not None
        assert await client.cancel_stream(stream_id)
        with pytest.raises(Exception, match="was cancelled") as raised:
            async for _ in stream:
                pass
        assert type(raised.value).__name__ == "Cancelled"


def test_calls_of_other_functions_are_not_retried(proxy: TcpProxy) -> None:
    with Client(proxy.address) as client:
        stream = client.invoke("count_async", {"n": 100_000})
        next(stream)
        proxy.drop()
        with pytest.raises(Unavailable):
            for _ in stream:
                pass
        assert stream.stream_id() is None


def test_resume_gives_up_after_the_policy_s_attempts(server: RunningServer) -> None:
    policy = ResumePolicy(attempts=2, backoff=0.01, connect_timeout=0.5)
    with proxy_to(server.target) as proxy, Client(proxy.address, resume=policy) as client:
        stream = client.invoke("resumable_ticks", {"count": 100_000, "seconds": 0.01})
        next(stream)
        proxy.upstream = "127.0.0.1:1"  # nothing listens there: every resume fails
        proxy.drop()
        with pytest.raises(Unavailable):
            for _ in stream:
                pass  # two resumes find no server within 0.5 s each, then the error is raised
    with Client(server.target) as direct:
        assert direct.cancel_stream(stream.stream_id() or "")  # it was still producing


@pytest.mark.load
def test_a_stream_resumes_on_another_replica_through_redis(redis_url: str) -> None:
    arguments = ("tests.app:fns", "--port", "0", "--stream-store", redis_url)
    with serving(*arguments) as first, serving(*arguments) as second:
        first.wait_serving()
        second.wait_serving()
        with proxy_to(first.address) as proxy, Client(proxy.address) as client:
            stream = client.invoke("resumable_ticks", {"count": COUNT, "seconds": 0.01})
            chunks = []
            for chunk in stream:
                chunks.append(chunk)
                if len(chunks) == 20:
                    # The first replica's address now leads to the second: the resume lands
                    # there and reads the stream, still produced by the first, from Redis.
                    proxy.upstream = second.address
                    proxy.drop()
        assert [chunk["tick"] for chunk in chunks] == list(range(COUNT))
        assert {chunk["pid"] for chunk in chunks} == {first.pid}
        assert proxy.connections >= 2
        stop_both(first, second)


def stop_both(*servers: ServerProcess) -> None:
    for server in servers:
        server.signal(signal.SIGTERM)
        assert server.wait(30) == 0, server.log
