"""Chunk coalescing: chunks that pile up while a write is in flight travel as one message.

The toolkit's clients opt in (``coalesce=True``, the default) and unpack batches, so user code
still sees one chunk per yield. Callers that do not opt in (``max_batch`` 0) never get a batch.
A reader that pauses makes the server's writes wait, which is what makes chunks pile up.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import json_format

from grpc_serverfn import Client, FailedPrecondition, Internal
from grpc_serverfn._proto.serverfn.v1 import serverfn_pb2, serverfn_pb2_grpc
from grpc_serverfn.testing import RunningServer
from tests import app
from tests.conftest import Caller, drain

PROMPTLY = 5.0


@pytest.fixture
def raw_stub(server: RunningServer) -> Iterator[serverfn_pb2_grpc.ServerFunctionsStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield serverfn_pb2_grpc.ServerFunctionsStub(channel)  # type: ignore[no-untyped-call]


def read_slowly(messages: Iterator[serverfn_pb2.Chunk]) -> list[serverfn_pb2.Chunk]:
    """Take the first message, pause so that the server's writes back up, then read the rest."""
    received = [next(messages)]
    time.sleep(0.3)
    received.extend(messages)
    return received


def unpack(messages: list[serverfn_pb2.Chunk]) -> tuple[list[object], list[int]]:
    """Every chunk's value in order, and how many chunks each message carried; checks seq."""
    values: list[object] = []
    sizes: list[int] = []
    for message in messages:
        assert message.seq == len(values), "a message's seq must be its first chunk's position"
        which = message.WhichOneof("payload")
        if which == "batch":
            items = list(message.batch.json) or [
                json_format.MessageToDict(value) for value in message.batch.values
            ]
        else:
            items = [getattr(message, which)]
        values.extend(items)
        sizes.append(len(items))
    return values, sizes


def test_packed_chunks_keep_their_order_and_sequence_numbers(raw_stub: object) -> None:
    request = serverfn_pb2.InvokeRequest(function="count_async", json='{"n": 20000}', max_batch=64)
    messages = read_slowly(raw_stub.Invoke(request))  # type: ignore[attr-defined]
    values, sizes = unpack(messages)
    assert values == [str(i) for i in range(20000)]
    assert max(sizes) > 1, "nothing was packed although the reader paused"
    assert max(sizes) <= 64, "a batch exceeded the caller's max_batch"


def test_value_chunks_are_packed_as_values(raw_stub: object) -> None:
    request = serverfn_pb2.InvokeRequest(
        function="count_async",
        json='{"n": 5000}',
        max_batch=100,
        accept=serverfn_pb2.ENCODING_VALUE,
    )
    messages = read_slowly(raw_stub.Invoke(request))  # type: ignore[attr-defined]
    values, sizes = unpack(messages)
    assert [int(value) for value in values] == list(range(5000))  # type: ignore[call-overload]
    assert max(sizes) > 1


def test_callers_that_do_not_opt_in_get_one_chunk_per_message(raw_stub: object) -> None:
    request = serverfn_pb2.InvokeRequest(function="count_async", json='{"n": 3000}')
    messages = read_slowly(raw_stub.Invoke(request))  # type: ignore[attr-defined]
    assert all(message.WhichOneof("payload") == "json" for message in messages)
    assert [message.seq for message in messages] == list(range(3000))


@pytest.mark.parametrize("encoding", ["json", "value"])
def test_the_clients_unpack_batches_into_one_chunk_per_yield(invoke: Caller, encoding: str) -> None:
    outcome = invoke("count_async", {"n": 50000}, encoding=encoding)
    assert outcome.error is None
    assert outcome.chunks == list(range(50000))


def test_a_sync_generator_is_coalesced_too(invoke: Caller) -> None:
    assert invoke("count_sync", {"n": 3000}).chunks == list(range(3000))


def test_a_slow_producers_chunks_are_each_delivered_at_once(server: RunningServer) -> None:
    """Each chunk arrives before the next is produced: nothing waits to fill a batch."""
    key = uuid.uuid4().hex
    probe = app.probe(key)
    received = []
    with Client(server.target, coalesce=True) as client:
        for chunk in client.invoke("ping_pong", {"probe": key, "chunks": 20, "seconds": 10}):
            received.append(chunk)
            probe.acks.release()
    assert received == list(range(20))


async def test_a_slow_producers_chunks_are_each_delivered_at_once_async(
    server: RunningServer,
) -> None:
    key = uuid.uuid4().hex
    probe = app.probe(key)
    received = []
    async with server.async_client(coalesce=True) as client:
        async for chunk in client.invoke("ping_pong", {"probe": key, "chunks": 20, "seconds": 10}):
            received.append(chunk)
            probe.acks.release()
    assert received == list(range(20))


def test_an_error_after_a_packed_batch_arrives_after_the_whole_batch(
    server: RunningServer, raw_stub: object
) -> None:
    request = serverfn_pb2.InvokeRequest(function="fail_after", json='{"n": 5000}', max_batch=256)
    call = raw_stub.Invoke(request)  # type: ignore[attr-defined]
    messages = [next(call)]
    time.sleep(0.3)
    with pytest.raises(grpc.RpcError) as caught:
        drain(call, into=messages)
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    values, sizes = unpack(messages)
    assert values == [str(i) for i in range(5000)]
    assert max(sizes) > 1

    with Client(server.target) as client:
        chunks: list[object] = []
        with pytest.raises(FailedPrecondition):
            drain(client.invoke("fail_after", {"n": 5000}), into=chunks)
    assert chunks == list(range(5000))


def test_an_unencodable_value_in_a_batch_ends_the_stream_after_the_chunks_before_it(
    invoke: Caller,
) -> None:
    outcome = invoke("unencodable", {"n": 3000})
    assert outcome.chunks == list(range(3000))
    assert isinstance(outcome.error, Internal)
    assert "'object'" in outcome.error.message


@pytest.mark.parametrize("function", ["wait_async", "wait_sync", "sync_endless"])
def test_leaving_a_coalesced_stream_early_runs_the_handlers_cleanup(
    server: RunningServer, function: str
) -> None:
    key = uuid.uuid4().hex
    probe = app.probe(key)
    with Client(server.target, coalesce=True) as client:
        for chunk in client.invoke(function, {"probe": key, "chunks": 3}):
            assert chunk == 0
            break
        assert probe.cleaned_up.wait(PROMPTLY)
        assert client.call("echo_async", "next") == "next"
