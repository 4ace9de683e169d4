"""Resumable streams shared through a real Redis by separate server processes (replicas): a
stream started on one is resumed on another with exactly the missing chunks, cancelled from
another, and reported lost when the process producing it is killed."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from grpc_serverfn import StreamOptions, Unavailable
from grpc_serverfn._proto.serverfn.v1 import serverfn_pb2, serverfn_pb2_grpc
from grpc_serverfn.redis_store import RedisStreamStore
from grpc_serverfn.testing import run_in_thread
from tests import app
from tests.processes import ServerProcess, serving
from tests.test_resumable import read_all, resume, unpacked

pytestmark = pytest.mark.load
Stub = serverfn_pb2_grpc.ServerFunctionsStub


@pytest.fixture(scope="module")
def replicas(redis_url: str) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two server processes sharing one Redis stream store."""
    arguments = ("tests.app:fns", "--port", "0", "--stream-store", redis_url)
    with serving(*arguments) as first, serving(*arguments) as second:
        first.wait_serving()
        second.wait_serving()
        yield first, second
        for server in (first, second):
            server.signal(signal.SIGTERM)
            assert server.wait(30) == 0, server.log


@pytest.fixture
def stubs(replicas: tuple[ServerProcess, ServerProcess]) -> Iterator[tuple[Stub, Stub]]:
    first, second = replicas
    with grpc.insecure_channel(first.address) as a, grpc.insecure_channel(second.address) as b:
        yield serverfn_pb2_grpc.ServerFunctionsStub(a), serverfn_pb2_grpc.ServerFunctionsStub(b)


def start(stub: Stub, **ticks: Any) -> tuple[Any, str]:
    request = serverfn_pb2.InvokeRequest(function="resumable_ticks", json=json.dumps(ticks))
    call = stub.Invoke(request, timeout=60)
    return call, str(dict(call.initial_metadata())["serverfn-stream-id"])


def test_a_stream_started_on_one_replica_resumes_on_another(
    replicas: tuple[ServerProcess, ServerProcess], stubs: tuple[Stub, Stub]
) -> None:
    first, second = replicas
    on_first, on_second = stubs
    call, stream_id = start(on_first, count=20, seconds=0.02)
    received = [value for _ in range(5) for value in unpacked(next(call))]
    call.cancel()
    rest = [value for chunk in resume(on_second, stream_id, 5) for value in unpacked(chunk)]
    everything = received + rest
    assert [seq for seq, _ in everything] == list(range(20))
    assert [value["tick"] for _, value in everything] == list(range(20))
    # Every chunk was produced by the first replica, even those read from the second.
    assert {value["pid"] for _, value in everything} == {first.pid}
    assert second.pid != first.pid


def test_cancel_from_another_replica_stops_the_producer(
    replicas: tuple[ServerProcess, ServerProcess], stubs: tuple[Stub, Stub]
) -> None:
    first, _ = replicas
    on_first, on_second = stubs
    key = f"redis-cancel-{uuid.uuid4()}"
    call, stream_id = start(on_first, probe=key, count=100_000, seconds=0.01)
    assert unpacked(next(call))[0][0] == 0
    response = on_second.CancelStream(serverfn_pb2.CancelStreamRequest(stream_id=stream_id))
    assert response.was_running
    with pytest.raises(grpc.RpcError) as raised:
        for _ in call:
            pass
    assert raised.value.code() is grpc.StatusCode.CANCELLED
    assert raised.value.details() == f"stream {stream_id} was cancelled (CancelStream)"
    first.wait_for_line(f"resumable cleaned up {key}")


def test_an_unknown_stream_is_not_found_on_every_replica(stubs: tuple[Stub, Stub]) -> None:
    for stub in stubs:
        with pytest.raises(grpc.RpcError) as raised:
            list(resume(stub, "f" * 32, 0))
        assert raised.value.code() is grpc.StatusCode.NOT_FOUND


def test_a_killed_producer_is_reported_to_its_readers(
    redis_url: str, stubs: tuple[Stub, Stub]
) -> None:
    _, on_second = stubs
    with serving("tests.app:fns", "--port", "0", "--stream-store", redis_url) as doomed:
        doomed.wait_serving()
        with grpc.insecure_channel(doomed.address) as channel:
            call, stream_id = start(
                serverfn_pb2_grpc.ServerFunctionsStub(channel), count=100_000, seconds=0.01
            )
            assert unpacked(next(call))[0][0] == 0
            reader = resume(on_second, stream_id, 0)
            assert unpacked(next(reader))[0][0] == 0
            doomed.signal(signal.SIGKILL)
            doomed.wait(30)
    received, raised = read_all(reader)
    delivered = 1 + len(received)
    # Its lease (5 s) lapses, and the reader on the other replica is told, not left hanging.
    assert raised.code() is grpc.StatusCode.ABORTED
    assert raised.details() == (
        f"the producer of stream {stream_id} stopped without finishing (its server went away);"
        f" {delivered} chunks were delivered"
    )


def test_a_stopping_server_gives_its_producers_the_grace_then_ends_them_aborted(
    redis_url: str, stubs: tuple[Stub, Stub]
) -> None:
    _, on_second = stubs
    arguments = ("tests.app:fns", "--port", "0", "--stream-store", redis_url, "--grace", "1")
    with serving(*arguments) as stopping:
        stopping.wait_serving()
        with grpc.insecure_channel(stopping.address) as channel:
            stub = serverfn_pb2_grpc.ServerFunctionsStub(channel)
            short, short_id = start(stub, count=20, seconds=0.02)  # done within the grace
            long, long_id = start(stub, count=100_000, seconds=0.01)
            next(short)
            next(long)
            short.cancel()  # both readers leave; the producers carry on
            long.cancel()
        stopping.signal(signal.SIGTERM)
        assert stopping.wait(30) == 0, stopping.log
    whole = [
        value["tick"] for chunk in resume(on_second, short_id, 0) for _, value in unpacked(chunk)
    ]
    assert whole == list(range(20))
    received, raised = read_all(resume(on_second, long_id, 0))
    assert raised.code() is grpc.StatusCode.ABORTED
    assert raised.details() == (
        f"the server producing stream {long_id} shut down before it finished"
    ), stopping.log
    assert [value["tick"] for _, value in received] == list(range(len(received)))
    assert len(received) > 20  # it went on producing through the grace


def test_a_store_that_fails_is_unavailable_and_the_server_serves_on() -> None:

    dead_store = RedisStreamStore("redis://127.0.0.1:1/0")  # nothing listens on port 1
    streams = StreamOptions(store=dead_store)
    with run_in_thread(app.fns, streams=streams) as server, server.client() as client:
        with pytest.raises(Unavailable) as raised:
            list(client.invoke("resumable_ticks", {"count": 3}))
        assert raised.value.message == "the server's stream store failed; see the server log"
        assert client.call("echo_async", "still serving") == "still serving"
