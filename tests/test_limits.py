"""Configurable limits with safe defaults: concurrent and pending calls, input nesting, chunk
size.

Each limit ends the call with a clear status (and what came before it delivered), and the
server goes on serving.
"""

from __future__ import annotations

import asyncio
import collections
import json
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio
import pytest

from grpc_serverfn import Client, InvalidArgument, Limits, ResourceExhausted
from grpc_serverfn._proto.serverfn.v1 import serverfn_pb2, serverfn_pb2_grpc
from grpc_serverfn.testing import RunningServer, run_in_thread
from tests import app
from tests.conftest import Caller, drain
from tests.processes import serving

PROMPTLY = 5.0


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.fixture(scope="module")
def small_server() -> Iterator[RunningServer]:
    """The test app with tight limits: 2 calls at once, inputs 10 deep, 64 KiB messages."""
    limits = Limits(max_concurrent_calls=2, max_input_depth=10, max_message_bytes=65536)
    with run_in_thread(app.fns, limits=limits) as running:
        yield running


def test_calls_beyond_the_concurrency_limit_are_refused_not_queued(
    small_server: RunningServer,
) -> None:
    keys = [uuid.uuid4().hex for _ in range(2)]
    with Client(small_server.target) as client:
        streams = [client.invoke("wait_async", {"probe": key}) for key in keys]
        assert [next(stream) for stream in streams] == [0, 0]  # both are running
        with pytest.raises(ResourceExhausted, match="limit of 2 concurrent calls"):
            client.call("echo_async", "third")
        streams[0].cancel()
        assert app.probe(keys[0]).cleaned_up.wait(PROMPTLY)
        # A slot is free again (the count drops once the call's cleanup has run).
        for _ in range(50):
            try:
                assert client.call("echo_async", "again") == "again"
                break
            except ResourceExhausted:
                app.probe(keys[0]).cleaned_up.wait(0.05)
        else:
            pytest.fail("the freed slot was never reused")
        streams[1].cancel()
        assert app.probe(keys[1]).cleaned_up.wait(PROMPTLY)


def test_input_nested_beyond_the_limit_is_invalid_argument(invoke: Caller) -> None:
    assert invoke("echo_async", nested(63)).chunks == [nested(63)]
    outcome = invoke("echo_async", nested(65))
    assert isinstance(outcome.error, InvalidArgument)
    assert "deeper than the server's limit of 64 levels" in outcome.error.message
    assert outcome.error.field_violations == [("json", "nested deeper than 64 levels")]


def test_json_text_nested_past_the_parsers_own_limit_is_invalid_argument(stub: object) -> None:
    request = serverfn_pb2.InvokeRequest(function="echo_async", json="[" * 5000 + "]" * 5000)
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Invoke(request))  # type: ignore[attr-defined]
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "malformed JSON input" in caught.value.details()  # type: ignore[attr-defined]


def test_the_depth_limit_applies_to_value_input_too(small_server: RunningServer) -> None:
    with Client(small_server.target, encoding="value") as client:
        assert client.call("echo_async", nested(9)) == nested(9)
        with pytest.raises(InvalidArgument) as caught:
            client.call("echo_async", nested(11))
    assert caught.value.field_violations == [("value", "nested deeper than 10 levels")]


@pytest.mark.parametrize("coalesce", [False, True])
@pytest.mark.parametrize("encoding", ["json", "value"])
def test_an_oversized_chunk_ends_the_stream_after_the_chunks_before_it(
    small_server: RunningServer, coalesce: bool, encoding: str
) -> None:
    chunks: list[object] = []
    with Client(small_server.target, coalesce=coalesce, encoding=encoding) as client:  # type: ignore[arg-type]
        with pytest.raises(ResourceExhausted) as caught:
            drain(client.invoke("big_after", {"n": 3, "size": 100_000}), into=chunks)
        assert chunks == ["0", "1", "2"]
        assert "'big_after' produced chunk 3" in caught.value.message
        assert "over the server's limit" in caught.value.message
        # The server goes on serving, and a chunk under the limit passes.
        assert list(client.invoke("big_after", {"n": 0, "size": 60_000})) == ["x" * 60_000]


async def ended_as(call: Any) -> str:
    """How a raw call ended: OK or its status code's name."""
    try:
        async for _ in call:
            pass
    except grpc.RpcError as error:
        return str(error.code().name)  # type: ignore[attr-defined]
    return "OK"


async def burst_while_the_loop_is_blocked(
    target: str, calls: int, *, in_process: bool = True, seconds: float = 1
) -> collections.Counter[str]:
    """Block the server's event loop for ``seconds``, start ``calls`` calls meanwhile on one
    channel (plain stubs: no client retries), and count how they ended. (A server in another
    process is given 0.3 s to start blocking, its probes being out of sight.)"""
    key = uuid.uuid4().hex
    hog = serverfn_pb2.InvokeRequest(
        function="hog_loop", json=json.dumps({"probe": key, "seconds": seconds})
    )
    request = serverfn_pb2.InvokeRequest(function="echo_async", json='"x"')
    async with grpc.aio.insecure_channel(target) as channel:
        stub = serverfn_pb2_grpc.ServerFunctionsStub(channel)  # type: ignore[no-untyped-call]
        hogging = asyncio.ensure_future(ended_as(stub.Invoke(hog, timeout=30)))
        if in_process:
            assert await asyncio.to_thread(app.probe(key).started.wait, PROMPTLY)
        else:
            await asyncio.sleep(0.3)
        ended = await asyncio.gather(
            *(ended_as(stub.Invoke(request, timeout=30)) for _ in range(calls))
        )
        assert await hogging == "OK"
    return collections.Counter(ended)


def test_a_burst_waits_in_grpc_until_the_busy_server_takes_it_up() -> None:
    """1,500 calls arrive while the server's loop is busy: all wait and are served. (grpc's
    own backlog limit, 1,000 with random drops above, cancelled some of them.)"""
    with run_in_thread(app.fns) as running:
        ended = asyncio.run(burst_while_the_loop_is_blocked(running.target, 1_500))
    assert ended == {"OK": 1_500}


def test_grpc_cancels_the_calls_beyond_the_pending_limit() -> None:
    """What ``max_pending_calls`` bounds: calls past it never reach the server, and their
    callers see CANCELLED."""
    with run_in_thread(app.fns, limits=Limits(max_pending_calls=50)) as running:
        ended = asyncio.run(burst_while_the_loop_is_blocked(running.target, 300))
    assert set(ended) == {"OK", "CANCELLED"}, ended
    assert 50 <= ended["OK"] <= 60, ended  # the limit, one taken up already, one in between


def test_serve_max_pending_calls_sets_the_pending_limit() -> None:
    with serving("tests.app:fns", "--port", "0", "--max-pending-calls", "50") as server:
        target = server.wait_serving()
        ended = asyncio.run(burst_while_the_loop_is_blocked(target, 300, in_process=False))
    assert 50 <= ended["OK"] <= 60, ended
    assert ended["CANCELLED"] == 300 - ended["OK"], ended


def test_grpc_cancels_the_calls_that_waited_past_the_pending_time() -> None:
    """What ``max_pending_seconds`` bounds: calls that waited longer to be taken up never
    reach the server (grpc's own 30 s cancelled the tail of a 5,000-stream burst)."""
    with run_in_thread(app.fns, limits=Limits(max_pending_seconds=1)) as running:
        ended = asyncio.run(burst_while_the_loop_is_blocked(running.target, 100, seconds=2.5))
    # All but the call or two the server had already asked grpc for before its loop blocked.
    assert ended["CANCELLED"] >= 98, ended
    assert ended["CANCELLED"] + ended["OK"] == 100, ended


def test_calls_wait_for_a_server_busier_than_a_second_by_default() -> None:
    with run_in_thread(app.fns) as running:
        ended = asyncio.run(burst_while_the_loop_is_blocked(running.target, 100, seconds=2.5))
    assert ended == {"OK": 100}, ended
