"""Resumable streams on one server (the in-memory store), through plain grpcio stubs: the
stream id in the initial metadata, resuming with exactly the missing chunks, a producer that
outlives its reader until it finishes or nobody reads for the idle TTL, CancelStream, expiry,
and the errors of each (NOT_FOUND for an unknown or expired stream)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from grpc_serverfn import StreamOptions
from grpc_serverfn._codec import from_value
from grpc_serverfn._proto.serverfn.v1 import serverfn_pb2, serverfn_pb2_grpc
from grpc_serverfn.testing import RunningServer, run_in_thread
from tests import app

PROMPTLY = 10.0
Stub = serverfn_pb2_grpc.ServerFunctionsStub


@pytest.fixture(scope="module")
def short_lived() -> Iterator[RunningServer]:
    """A server whose streams lose their producer after 0.5 s without a reader and are
    deleted 1 s after their last write."""
    streams = StreamOptions(idle_ttl=0.5, retention=1.0)
    with run_in_thread(app.fns, streams=streams) as running:
        yield running


def stub_for(server: RunningServer) -> Iterator[Stub]:
    with grpc.insecure_channel(server.target) as channel:
        yield serverfn_pb2_grpc.ServerFunctionsStub(channel)


@pytest.fixture
def stub(server: RunningServer) -> Iterator[Stub]:
    yield from stub_for(server)


@pytest.fixture
def short_stub(short_lived: RunningServer) -> Iterator[Stub]:
    yield from stub_for(short_lived)


def start(stub: Stub, **ticks: Any) -> tuple[Any, str]:
    request = serverfn_pb2.InvokeRequest(function="resumable_ticks", json=json.dumps(ticks))
    call = stub.Invoke(request, timeout=30)
    stream_id = dict(call.initial_metadata())["serverfn-stream-id"]
    return call, str(stream_id)


def resume(stub: Stub, stream_id: str, next_seq: int, **fields: Any) -> Any:
    request = serverfn_pb2.InvokeRequest(
        resume=serverfn_pb2.Resume(stream_id=stream_id, next_seq=next_seq), **fields
    )
    return stub.Invoke(request, timeout=30)


def unpacked(chunk: serverfn_pb2.Chunk) -> list[tuple[int, Any]]:
    """(seq, value) for each chunk a message carries, whatever its encoding."""
    which = chunk.WhichOneof("payload")
    if which == "json":
        return [(chunk.seq, json.loads(chunk.json))]
    if which == "value":
        return [(chunk.seq, from_value(chunk.value))]
    batch = chunk.batch
    values = [json.loads(text) for text in batch.json] or [from_value(v) for v in batch.values]
    return [(chunk.seq + offset, value) for offset, value in enumerate(values)]


def read_all(call: Any) -> tuple[list[tuple[int, Any]], grpc.RpcError]:
    """Every (seq, value) a call delivers before it ends with an error, and that error."""
    received: list[tuple[int, Any]] = []
    try:
        for chunk in call:
            received.extend(unpacked(chunk))
    except grpc.RpcError as error:
        return received, error
    raise AssertionError(f"the call ended OK after {received}")


def ticks_of(call: Any) -> list[tuple[int, int]]:
    return [(seq, value["tick"]) for chunk in call for seq, value in unpacked(chunk)]


def new_probe() -> tuple[str, app.Probe]:
    key = f"resumable-{uuid.uuid4()}"
    return key, app.probe(key)


def test_a_call_announces_its_stream_id_and_streams_every_chunk(stub: Stub) -> None:
    call, stream_id = start(stub, count=4, seconds=0)
    assert len(stream_id) == 32  # 128 random bits, hex
    assert int(stream_id, 16) >= 0
    assert ticks_of(call) == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert call.code() is grpc.StatusCode.OK


def test_list_functions_marks_resumable_functions(stub: Stub) -> None:
    infos = {f.name: f for f in stub.ListFunctions(serverfn_pb2.ListFunctionsRequest()).functions}
    assert infos["resumable_ticks"].resumable
    assert not infos["echo_async"].resumable


@pytest.mark.parametrize("accept", ["json", "value", "batch"])
def test_resuming_after_a_dropped_reader_sends_exactly_the_missing_chunks(
    stub: Stub, accept: str
) -> None:
    key, probe = new_probe()
    call, stream_id = start(stub, probe=key, count=12, seconds=0.02)
    first = [unpacked(next(call))[0][0] for _ in range(3)]
    call.cancel()  # the reader goes away; the producer does not
    assert first == [0, 1, 2]
    fields: dict[str, Any] = {
        "json": {"accept": serverfn_pb2.ENCODING_JSON},
        "value": {"accept": serverfn_pb2.ENCODING_VALUE},
        "batch": {"max_batch": 64},
    }[accept]
    if accept == "batch":
        assert probe.cleaned_up.wait(PROMPTLY)  # all stored: the replay comes packed
    rest = resume(stub, stream_id, 3, **fields)
    assert ticks_of(rest) == [(seq, seq) for seq in range(3, 12)]
    assert rest.code() is grpc.StatusCode.OK
    assert probe.cleaned_up.wait(PROMPTLY)
    assert not probe.cancelled_seen.is_set(), "the producer was stopped with its reader"


def test_a_finished_stream_replays_from_the_start_and_with_its_error(stub: Stub) -> None:
    call, stream_id = start(stub, count=5, seconds=0, fail_at=3)
    with pytest.raises(grpc.RpcError) as first:
        ticks_of(call)
    assert first.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    received, again = read_all(resume(stub, stream_id, 0))
    assert [(seq, value["tick"]) for seq, value in received] == [(0, 0), (1, 1), (2, 2)]
    assert again.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert again.details() == "tick 3 failed on purpose"


def test_resuming_an_unknown_stream_is_not_found(stub: Stub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        list(resume(stub, "0" * 32, 0))
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND
    assert raised.value.details() == (
        f"no resumable stream {'0' * 32!r}: it never existed, or its retention has passed and"
        " it was deleted"
    )


def test_resuming_as_another_function_is_invalid(stub: Stub) -> None:
    call, stream_id = start(stub, count=1, seconds=0)
    assert ticks_of(call) == [(0, 0)]
    request = serverfn_pb2.InvokeRequest(
        function="echo_async", resume=serverfn_pb2.Resume(stream_id=stream_id)
    )
    with pytest.raises(grpc.RpcError) as raised:
        list(stub.Invoke(request, timeout=30))
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "is a stream of 'resumable_ticks', not of 'echo_async'" in raised.value.details()


def test_cancel_stream_stops_the_producer_and_ends_its_readers(stub: Stub) -> None:
    key, probe = new_probe()
    call, stream_id = start(stub, probe=key, count=100_000, seconds=0.01)
    assert unpacked(next(call))[0][0] == 0
    response = stub.CancelStream(serverfn_pb2.CancelStreamRequest(stream_id=stream_id))
    assert response.was_running
    with pytest.raises(grpc.RpcError) as raised:
        ticks_of(call)
    assert raised.value.code() is grpc.StatusCode.CANCELLED
    assert raised.value.details() == f"stream {stream_id} was cancelled (CancelStream)"
    assert probe.cancelled_seen.wait(PROMPTLY)
    assert probe.cleaned_up.wait(PROMPTLY)
    # It has ended now: a second cancel says so; an unknown stream is NOT_FOUND.
    again = stub.CancelStream(serverfn_pb2.CancelStreamRequest(stream_id=stream_id))
    assert not again.was_running
    with pytest.raises(grpc.RpcError) as unknown:
        stub.CancelStream(serverfn_pb2.CancelStreamRequest(stream_id="nope"))
    assert unknown.value.code() is grpc.StatusCode.NOT_FOUND


def test_a_producer_outlives_its_reader_until_the_idle_ttl(short_stub: Stub) -> None:
    key, probe = new_probe()
    call, stream_id = start(short_stub, probe=key, count=100_000, seconds=0.01)
    assert unpacked(next(call))[0][0] == 0
    call.cancel()
    dropped = time.monotonic()
    # It runs on without a reader, then stops about 0.5 s (the idle TTL) later.
    assert probe.cleaned_up.wait(PROMPTLY)
    assert probe.cancelled_seen.is_set()
    outlived = time.monotonic() - dropped
    assert outlived >= 0.4, f"the producer stopped {outlived:.2f} s after its reader left"
    received, raised = read_all(resume(short_stub, stream_id, 0))
    assert raised.code() is grpc.StatusCode.CANCELLED
    assert "had no reader for 0.5 s" in raised.details()
    assert [(seq, value["tick"]) for seq, value in received] == [
        (seq, seq) for seq in range(len(received))
    ]
    assert len(received) > 10  # it kept producing after the reader left


def test_a_stream_is_deleted_after_its_retention(short_stub: Stub) -> None:
    call, stream_id = start(short_stub, count=2, seconds=0)
    assert ticks_of(call) == [(0, 0), (1, 1)]
    assert ticks_of(resume(short_stub, stream_id, 1)) == [(1, 1)]
    time.sleep(1.3)  # retention 1 s after the last write
    with pytest.raises(grpc.RpcError) as raised:
        list(resume(short_stub, stream_id, 0))
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND


def test_a_resume_past_the_end_gets_only_the_status(stub: Stub) -> None:
    call, stream_id = start(stub, count=2, seconds=0)
    assert ticks_of(call) == [(0, 0), (1, 1)]
    late = resume(stub, stream_id, 2)
    assert ticks_of(late) == []
    assert late.code() is grpc.StatusCode.OK
