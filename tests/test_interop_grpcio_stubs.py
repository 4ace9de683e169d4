"""A caller that uses only the grpcio-generated ServerFunctionsStub (no toolkit client), sync and
asyncio: what another Python service sees on the wire, status codes and the google.rpc.Status
trailer included."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from types import ModuleType
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from grpc_serverfn._proto.serverfn.v1 import serverfn_pb2, serverfn_pb2_grpc
from grpc_serverfn.testing import RunningServer
from tests import app

STREAM_DATA = [{"progress": 0}, {"progress": 33}, {"progress": 66}, {"progress": 100, "done": True}]

InvokeRequest = serverfn_pb2.InvokeRequest
Chunk = serverfn_pb2.Chunk
ENCODING_JSON = serverfn_pb2.ENCODING_JSON
ENCODING_VALUE = serverfn_pb2.ENCODING_VALUE


def to_value(obj: Any) -> struct_pb2.Value:
    value = struct_pb2.Value()
    json_format.ParseDict(obj, value)
    return value


def payload(chunk: Chunk) -> tuple[str, Any]:
    """Which payload the chunk carries, and its value as native JSON."""
    kind = chunk.WhichOneof("payload")
    if kind == "json":
        return kind, json.loads(chunk.json)
    assert kind == "value", f"a chunk without a payload: {chunk!r}"
    return kind, json_format.MessageToDict(chunk.value)


def collect(
    stub: serverfn_pb2_grpc.ServerFunctionsStub, request: InvokeRequest
) -> tuple[list[Chunk], grpc.RpcError | None]:
    chunks: list[Chunk] = []
    try:
        for chunk in stub.Invoke(request, timeout=30):
            chunks.append(chunk)
    except grpc.RpcError as error:
        return chunks, error
    return chunks, None


async def collect_async(
    stub: serverfn_pb2_grpc.ServerFunctionsStub, request: InvokeRequest
) -> tuple[list[Chunk], grpc.aio.AioRpcError | None]:
    chunks: list[Chunk] = []
    try:
        async for chunk in stub.Invoke(request, timeout=30):
            chunks.append(chunk)
    except grpc.aio.AioRpcError as error:
        return chunks, error
    return chunks, None


def bad_request_of(status: status_pb2.Status | None) -> error_details_pb2.BadRequest:
    assert status is not None, "no grpc-status-details-bin trailer"
    [detail] = status.details
    bad_request = error_details_pb2.BadRequest()
    assert detail.Unpack(bad_request), f"the detail is a {detail.TypeName()}"
    return bad_request


@pytest.fixture
def demo_stub(demo_server: RunningServer) -> Iterator[serverfn_pb2_grpc.ServerFunctionsStub]:
    with grpc.insecure_channel(demo_server.target) as channel:
        yield serverfn_pb2_grpc.ServerFunctionsStub(channel)  # type: ignore[no-untyped-call]


@pytest.fixture
def app_stub(server: RunningServer) -> Iterator[serverfn_pb2_grpc.ServerFunctionsStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield serverfn_pb2_grpc.ServerFunctionsStub(channel)  # type: ignore[no-untyped-call]


@pytest.fixture
async def demo_aio_stub(
    demo_server: RunningServer,
) -> AsyncIterator[serverfn_pb2_grpc.ServerFunctionsStub]:
    async with grpc.aio.insecure_channel(demo_server.target) as channel:
        yield serverfn_pb2_grpc.ServerFunctionsStub(channel)  # type: ignore[no-untyped-call]


@pytest.fixture
async def app_aio_stub(
    server: RunningServer,
) -> AsyncIterator[serverfn_pb2_grpc.ServerFunctionsStub]:
    async with grpc.aio.insecure_channel(server.target) as channel:
        yield serverfn_pb2_grpc.ServerFunctionsStub(channel)  # type: ignore[no-untyped-call]


CHAT_REQUESTS = pytest.mark.parametrize(
    ("request_", "expected_kind"),
    [
        (InvokeRequest(function="stream_chat", value=to_value({"message": "hi"})), "value"),
        (
            InvokeRequest(function="stream_chat", json='{"message": "hi"}', accept=ENCODING_VALUE),
            "value",
        ),
        (InvokeRequest(function="stream_chat", json='{"message": "hi"}'), "json"),
        (
            InvokeRequest(
                function="stream_chat", value=to_value({"message": "hi"}), accept=ENCODING_JSON
            ),
            "json",
        ),
    ],
    ids=["value-in-value-out", "json-in-accept-value", "json-in-json-out", "value-in-accept-json"],
)

INVALID_CHAT = pytest.mark.parametrize(
    "request_",
    [
        InvokeRequest(function="stream_chat", value=to_value({"message": ""})),
        InvokeRequest(function="stream_chat", value=to_value({})),
        InvokeRequest(function="stream_chat", json='{"message": 5}'),
    ],
    ids=["empty-message", "missing-message", "not-a-string"],
)


def assert_chat_reply(chunks: list[Chunk], demo: ModuleType, expected_kind: str) -> None:
    assert len(chunks) > 3
    assert [chunk.seq for chunk in chunks] == list(range(len(chunks)))
    kinds, values = zip(*(payload(chunk) for chunk in chunks), strict=True)
    assert set(kinds) == {expected_kind}
    assert all(set(value) == {"text"} for value in values)
    assert "".join(value["text"] for value in values) == demo.local_reply("hi")


def assert_bad_message(status: status_pb2.Status | None, error: grpc.RpcError) -> None:
    """The google.rpc.Status trailer repeats the code and message and names the bad field."""
    assert status is not None
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert status.message == error.details()
    assert "stream_chat" in status.message
    violations = bad_request_of(status).field_violations
    assert "message" in [violation.field for violation in violations]
    assert all(violation.description for violation in violations)


# --- blocking grpcio -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected_kind"),
    [
        (serverfn_pb2.ENCODING_UNSPECIFIED, "json"),
        (ENCODING_JSON, "json"),
        (ENCODING_VALUE, "value"),
    ],
)
def test_stream_data_sync(
    demo_stub: serverfn_pb2_grpc.ServerFunctionsStub, accept: int, expected_kind: str
) -> None:
    chunks, error = collect(demo_stub, InvokeRequest(function="stream_data", accept=accept))
    assert error is None
    assert [chunk.seq for chunk in chunks] == [0, 1, 2, 3]
    assert [payload(chunk) for chunk in chunks] == [(expected_kind, item) for item in STREAM_DATA]


@CHAT_REQUESTS
def test_stream_chat_sync(
    demo_stub: serverfn_pb2_grpc.ServerFunctionsStub,
    demo: ModuleType,
    request_: InvokeRequest,
    expected_kind: str,
) -> None:
    chunks, error = collect(demo_stub, request_)
    assert error is None
    assert_chat_reply(chunks, demo, expected_kind)


def test_an_unknown_function_is_not_found_sync(
    demo_stub: serverfn_pb2_grpc.ServerFunctionsStub,
) -> None:
    chunks, error = collect(demo_stub, InvokeRequest(function="no_such_function"))
    assert chunks == []
    assert isinstance(error, grpc.Call)
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert "no_such_function" in error.details()


@INVALID_CHAT
def test_invalid_input_sync(
    demo_stub: serverfn_pb2_grpc.ServerFunctionsStub, request_: InvokeRequest
) -> None:
    chunks, error = collect(demo_stub, request_)
    assert chunks == []
    assert isinstance(error, grpc.Call)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert_bad_message(rpc_status.from_call(error), error)


def test_an_error_mid_stream_comes_after_its_chunks_sync(
    app_stub: serverfn_pb2_grpc.ServerFunctionsStub,
) -> None:
    chunks, error = collect(app_stub, InvokeRequest(function="fail_after", json='{"n": 2}'))
    assert [chunk.seq for chunk in chunks] == [0, 1]
    assert [payload(chunk) for chunk in chunks] == [("json", 0), ("json", 1)]
    assert isinstance(error, grpc.Call)
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == "the widget is not ready"
    status = rpc_status.from_call(error)
    assert status is not None
    assert status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert status.message == "the widget is not ready"


def test_cancel_mid_stream_runs_the_handlers_cleanup_sync(
    app_stub: serverfn_pb2_grpc.ServerFunctionsStub,
) -> None:
    key = f"grpcio-sync-{uuid.uuid4()}"
    request = InvokeRequest(function="wait_async", value=to_value({"probe": key, "chunks": 2}))
    call = app_stub.Invoke(request, timeout=30)
    received = [payload(next(call)), payload(next(call))]
    assert received == [("value", 0), ("value", 1)]
    record = app.probe(key)
    # Cancel while the handler awaits: it sees CancelledError there, GeneratorExit at a yield.
    assert record.waiting.wait(5)
    assert call.cancel()
    with pytest.raises(grpc.RpcError) as raised:
        next(call)
    assert raised.value.code() is grpc.StatusCode.CANCELLED  # type: ignore[attr-defined]
    assert record.cleaned_up.wait(5)
    assert record.cancelled_seen.is_set()


def test_list_functions_sync(demo_stub: serverfn_pb2_grpc.ServerFunctionsStub) -> None:
    response = demo_stub.ListFunctions(serverfn_pb2.ListFunctionsRequest(), timeout=30)
    infos = {info.name: info for info in response.functions}
    assert [info.name for info in response.functions] == [
        "process_large_file",
        "stream_chat",
        "stream_data",
    ]
    assert infos["stream_chat"].method == serverfn_pb2.METHOD_POST
    assert infos["stream_data"].method == serverfn_pb2.METHOD_GET
    assert infos["stream_chat"].input_required
    schema = json_format.MessageToDict(infos["stream_chat"].input_schema)
    assert "message" in schema["properties"]
    assert not infos["stream_data"].HasField("input_schema")


# --- grpc.aio ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected_kind"),
    [
        (serverfn_pb2.ENCODING_UNSPECIFIED, "json"),
        (ENCODING_JSON, "json"),
        (ENCODING_VALUE, "value"),
    ],
)
async def test_stream_data_async(
    demo_aio_stub: serverfn_pb2_grpc.ServerFunctionsStub, accept: int, expected_kind: str
) -> None:
    request = InvokeRequest(function="stream_data", accept=accept)
    chunks, error = await collect_async(demo_aio_stub, request)
    assert error is None
    assert [chunk.seq for chunk in chunks] == [0, 1, 2, 3]
    assert [payload(chunk) for chunk in chunks] == [(expected_kind, item) for item in STREAM_DATA]


@CHAT_REQUESTS
async def test_stream_chat_async(
    demo_aio_stub: serverfn_pb2_grpc.ServerFunctionsStub,
    demo: ModuleType,
    request_: InvokeRequest,
    expected_kind: str,
) -> None:
    chunks, error = await collect_async(demo_aio_stub, request_)
    assert error is None
    assert_chat_reply(chunks, demo, expected_kind)


async def test_an_unknown_function_is_not_found_async(
    demo_aio_stub: serverfn_pb2_grpc.ServerFunctionsStub,
) -> None:
    chunks, error = await collect_async(demo_aio_stub, InvokeRequest(function="no_such_function"))
    assert chunks == []
    assert error is not None
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert "no_such_function" in (error.details() or "")


@INVALID_CHAT
async def test_invalid_input_async(
    demo_aio_stub: serverfn_pb2_grpc.ServerFunctionsStub, request_: InvokeRequest
) -> None:
    # On the call object: grpc_status.rpc_status.aio.from_call awaits its status.
    call = demo_aio_stub.Invoke(request_, timeout=30)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        [chunk async for chunk in call]
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert_bad_message(await rpc_status.aio.from_call(call), raised.value)
    # On the error: AioRpcError is a grpc.Call too, so the blocking from_call reads it as well.
    assert_bad_message(rpc_status.from_call(raised.value), raised.value)


async def test_an_error_mid_stream_comes_after_its_chunks_async(
    app_aio_stub: serverfn_pb2_grpc.ServerFunctionsStub,
) -> None:
    request = InvokeRequest(function="fail_after", value=to_value({"n": 2}))
    chunks, error = await collect_async(app_aio_stub, request)
    assert [chunk.seq for chunk in chunks] == [0, 1]
    assert [payload(chunk) for chunk in chunks] == [("value", 0), ("value", 1)]
    assert error is not None
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == "the widget is not ready"
    status = rpc_status.from_call(error)
    assert status is not None
    assert status.message == "the widget is not ready"


async def test_cancel_mid_stream_runs_the_handlers_cleanup_async(
    app_aio_stub: serverfn_pb2_grpc.ServerFunctionsStub,
) -> None:
    key = f"grpcio-aio-{uuid.uuid4()}"
    request = InvokeRequest(function="wait_async", json=json.dumps({"probe": key, "chunks": 2}))
    call = app_aio_stub.Invoke(request, timeout=30)
    received = [payload(await call.read()), payload(await call.read())]
    assert received == [("json", 0), ("json", 1)]
    record = app.probe(key)
    # Cancel while the handler awaits: it sees CancelledError there, GeneratorExit at a yield.
    assert await asyncio.to_thread(record.waiting.wait, 5)
    assert call.cancel()
    assert await call.code() is grpc.StatusCode.CANCELLED
    assert await asyncio.to_thread(record.cleaned_up.wait, 5)
    assert record.cancelled_seen.is_set()


async def test_list_functions_async(app_aio_stub: serverfn_pb2_grpc.ServerFunctionsStub) -> None:
    response = await app_aio_stub.ListFunctions(serverfn_pb2.ListFunctionsRequest(), timeout=30)
    names = [info.name for info in response.functions]
    assert names == [record.name for record in app.fns]
    assert {"fail_after", "wait_async"} <= set(names)
