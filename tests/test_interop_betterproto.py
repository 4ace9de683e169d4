"""The betterproto dataclasses and grpclib client in grpc_serverfn.stubs, against the toolkit's
grpcio server: a different HTTP/2 stack (h2, pure Python) from grpcio's C core, with typed
messages, both encodings, status codes and the google.rpc.Status details."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import betterproto
import pytest
from betterproto.lib.google.protobuf import ListValue, NullValue, Struct, Value
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from grpc_serverfn.stubs.serverfn.v1 import (
    Chunk,
    Encoding,
    InvokeRequest,
    ListFunctionsRequest,
    Method,
    ServerFunctionsStub,
)
from grpc_serverfn.testing import RunningServer
from tests import app

STREAM_DATA = [{"progress": 0}, {"progress": 33}, {"progress": 66}, {"progress": 100, "done": True}]
HOST = "127.0.0.1"


def to_value(obj: Any) -> Value:
    """Native JSON as betterproto's google.protobuf.Value, field by field."""
    if obj is None:
        return Value(null_value=NullValue._)
    if isinstance(obj, bool):
        return Value(bool_value=obj)
    if isinstance(obj, int | float):
        return Value(number_value=float(obj))
    if isinstance(obj, str):
        return Value(string_value=obj)
    if isinstance(obj, list):
        return Value(list_value=ListValue(values=[to_value(item) for item in obj]))
    if isinstance(obj, dict):
        return Value(struct_value=Struct(fields={k: to_value(v) for k, v in obj.items()}))
    raise TypeError(f"not JSON: {obj!r}")


def from_value(value: Value) -> Any:
    """betterproto's google.protobuf.Value as native JSON (numbers stay floats)."""
    kind, item = betterproto.which_one_of(value, "kind")
    if kind == "struct_value":
        return {key: from_value(field) for key, field in item.fields.items()}
    if kind == "list_value":
        return [from_value(element) for element in item.values]
    if kind == "null_value":
        return None
    assert kind in {"number_value", "string_value", "bool_value"}, f"no kind set in {value!r}"
    return item


def payload(chunk: Chunk) -> tuple[str, Any]:
    """Which payload the chunk carries, and its value as native JSON."""
    kind, item = betterproto.which_one_of(chunk, "payload")
    if kind == "json":
        return kind, json.loads(item)
    assert kind == "value", f"a chunk without a payload: {chunk!r}"
    return kind, from_value(item)


async def collect(
    stub: ServerFunctionsStub, request: InvokeRequest
) -> tuple[list[Chunk], GRPCError | None]:
    """Every chunk the call delivered, and the error it ended with (None: it ended OK)."""
    chunks: list[Chunk] = []
    try:
        async for chunk in stub.invoke(request, timeout=30):
            chunks.append(chunk)
    except GRPCError as error:
        return chunks, error
    return chunks, None


@pytest.fixture
async def demo_stub(demo_server: RunningServer) -> AsyncIterator[ServerFunctionsStub]:
    """The betterproto stub on a grpclib channel to the demo server."""
    channel = Channel(HOST, demo_server.port)
    try:
        yield ServerFunctionsStub(channel)
    finally:
        channel.close()


@pytest.fixture
async def app_stub(server: RunningServer) -> AsyncIterator[ServerFunctionsStub]:
    """The betterproto stub on a grpclib channel to the test app's server (tests/app.py)."""
    channel = Channel(HOST, server.port)
    try:
        yield ServerFunctionsStub(channel)
    finally:
        channel.close()


async def test_stream_data_without_input_streams_json_chunks(
    demo_stub: ServerFunctionsStub,
) -> None:
    chunks, error = await collect(demo_stub, InvokeRequest(function="stream_data"))
    assert error is None
    assert [chunk.seq for chunk in chunks] == [0, 1, 2, 3]
    assert [payload(chunk) for chunk in chunks] == [("json", item) for item in STREAM_DATA]
    assert all(type(json.loads(chunk.json)["progress"]) is int for chunk in chunks)


async def test_stream_data_with_accept_value_streams_value_chunks(
    demo_stub: ServerFunctionsStub,
) -> None:
    request = InvokeRequest(function="stream_data", accept=Encoding.VALUE)
    chunks, error = await collect(demo_stub, request)
    assert error is None
    assert [chunk.seq for chunk in chunks] == [0, 1, 2, 3]
    assert [payload(chunk) for chunk in chunks] == [("value", item) for item in STREAM_DATA]
    assert chunks[3].value.struct_value.fields["progress"].number_value == 100.0
    assert chunks[3].value.struct_value.fields["done"].bool_value is True


@pytest.mark.parametrize(
    ("request_", "expected_kind"),
    [
        (InvokeRequest(function="stream_chat", value=to_value({"message": "hi"})), "value"),
        (
            InvokeRequest(function="stream_chat", json='{"message": "hi"}', accept=Encoding.VALUE),
            "value",
        ),
        (InvokeRequest(function="stream_chat", json='{"message": "hi"}'), "json"),
        (
            InvokeRequest(
                function="stream_chat", value=to_value({"message": "hi"}), accept=Encoding.JSON
            ),
            "json",
        ),
    ],
    ids=["value-in-value-out", "json-in-accept-value", "json-in-json-out", "value-in-accept-json"],
)
async def test_stream_chat_streams_the_local_reply(
    demo_stub: ServerFunctionsStub, demo: ModuleType, request_: InvokeRequest, expected_kind: str
) -> None:
    chunks, error = await collect(demo_stub, request_)
    assert error is None
    assert len(chunks) > 3
    assert [chunk.seq for chunk in chunks] == list(range(len(chunks)))
    kinds, values = zip(*(payload(chunk) for chunk in chunks), strict=True)
    assert set(kinds) == {expected_kind}
    assert all(set(value) == {"text"} for value in values)
    assert "".join(value["text"] for value in values) == demo.local_reply("hi")


RICH = {
    "text": "héllo ✓",
    "empty": "",
    "zero": 0,
    "number": -12.5,
    "big": 2**52,
    "yes": True,
    "no": False,
    "nothing": None,
    "list": [1, "two", None, [], {}, [False]],
    "nested": {"deeper": {"deepest": [{"k": "v"}]}},
    "obj": {},
}


@pytest.mark.parametrize("obj", [RICH, [1, None, "x"], "just text", 7, 0, True, False, None])
async def test_values_round_trip_through_the_server(
    app_stub: ServerFunctionsStub, obj: Any
) -> None:
    """A betterproto Value goes in, echo_async returns it, the Value chunk comes back equal."""
    request = InvokeRequest(function="echo_async", value=to_value(obj))
    chunks, error = await collect(app_stub, request)
    assert error is None
    assert [payload(chunk) for chunk in chunks] == [("value", obj)]
    # The same value sent as JSON text comes back the same as JSON text.
    request = InvokeRequest(function="echo_async", json=json.dumps(obj))
    chunks, error = await collect(app_stub, request)
    assert error is None
    assert [payload(chunk) for chunk in chunks] == [("json", obj)]


async def test_the_documented_protobuf_conversion_of_values_round_trips(
    app_stub: ServerFunctionsStub,
) -> None:
    """grpc_serverfn.stubs documents converting Values through google.protobuf; it works."""
    value = Value().parse(json_format.ParseDict(RICH, struct_pb2.Value()).SerializeToString())
    assert from_value(value) == RICH
    chunks, error = await collect(app_stub, InvokeRequest(function="echo_async", value=value))
    assert error is None
    [chunk] = chunks
    assert json_format.MessageToDict(struct_pb2.Value.FromString(bytes(chunk.value))) == RICH


def test_betterproto_value_from_dict_does_not_convert_native_json() -> None:
    """Why grpc_serverfn.stubs tells users to build Values themselves: betterproto 2.0.0b7's
    Value.from_dict ignores native JSON, and to_dict gives field names, not JSON. When this
    fails, betterproto has fixed it: update the grpc_serverfn.stubs docstring in
    scripts/gen-stubs."""
    assert Value().from_dict({"message": "hi"}) == Value()
    assert to_value({"a": 1}).to_dict() == {"structValue": {"a": {"numberValue": 1.0}}}


async def test_an_unknown_function_is_not_found(demo_stub: ServerFunctionsStub) -> None:
    chunks, error = await collect(demo_stub, InvokeRequest(function="no_such_function"))
    assert chunks == []
    assert error is not None
    assert error.status is Status.NOT_FOUND
    assert error.message is not None
    assert "no_such_function" in error.message


@pytest.mark.parametrize(
    "request_",
    [
        InvokeRequest(function="stream_chat", value=to_value({"message": ""})),
        InvokeRequest(function="stream_chat", value=to_value({})),
        InvokeRequest(function="stream_chat", json='{"message": 5}'),
    ],
    ids=["empty-message", "missing-message", "not-a-string"],
)
async def test_invalid_input_is_invalid_argument_with_a_bad_request(
    demo_stub: ServerFunctionsStub, request_: InvokeRequest
) -> None:
    chunks, error = await collect(demo_stub, request_)
    assert chunks == []
    assert error is not None
    assert error.status is Status.INVALID_ARGUMENT
    assert error.message is not None
    assert "stream_chat" in error.message
    # grpclib decodes the grpc-status-details-bin trailer (a google.rpc.Status) itself, through
    # protobuf's symbol database: the BadRequest type is known because error_details_pb2 is
    # imported (here, and by the server in this process).
    assert error.details is not None
    [bad_request] = error.details
    assert isinstance(bad_request, error_details_pb2.BadRequest)
    fields = [violation.field for violation in bad_request.field_violations]
    assert "message" in fields
    assert all(violation.description for violation in bad_request.field_violations)


async def test_stream_chat_without_input_is_invalid_argument(
    demo_stub: ServerFunctionsStub,
) -> None:
    chunks, error = await collect(demo_stub, InvokeRequest(function="stream_chat"))
    assert chunks == []
    assert error is not None
    assert error.status is Status.INVALID_ARGUMENT


async def test_an_error_mid_stream_comes_after_its_chunks(app_stub: ServerFunctionsStub) -> None:
    for request in [
        InvokeRequest(function="fail_after", json='{"n": 2}'),
        InvokeRequest(function="fail_after", value=to_value({"n": 2})),
    ]:
        chunks, error = await collect(app_stub, request)
        assert [chunk.seq for chunk in chunks] == [0, 1]
        assert [payload(chunk)[1] for chunk in chunks] == [0, 1]
        assert error is not None
        assert error.status is Status.FAILED_PRECONDITION
        assert error.message == "the widget is not ready"


async def test_closing_the_stream_early_cancels_the_call_on_the_server(
    app_stub: ServerFunctionsStub,
) -> None:
    key = f"betterproto-{uuid.uuid4()}"
    request = InvokeRequest(function="wait_async", value=to_value({"probe": key, "chunks": 2}))
    received = []
    # aclosing: the generator (and with it grpclib's stream) closes here, not when collected.
    async with contextlib.aclosing(app_stub.invoke(request, timeout=30)) as stream:
        async for chunk in stream:
            received.append(payload(chunk))
            if len(received) == 2:
                # Close while the handler awaits, so it sees CancelledError, not GeneratorExit.
                assert await asyncio.to_thread(app.probe(key).waiting.wait, 5)
                break
    assert received == [("value", 0), ("value", 1)]
    record = app.probe(key)
    assert await asyncio.to_thread(record.cleaned_up.wait, 5)
    assert record.cancelled_seen.is_set()
    # The channel still serves the next call.
    chunks, error = await collect(app_stub, InvokeRequest(function="count_async", json='{"n": 3}'))
    assert error is None
    assert [payload(chunk) for chunk in chunks] == [("json", 0), ("json", 1), ("json", 2)]


async def test_a_deadline_raises_timeout_error_and_ends_the_call_on_the_server(
    app_stub: ServerFunctionsStub,
) -> None:
    """grpclib enforces the deadline itself: it raises TimeoutError, not GRPCError
    (DEADLINE_EXCEEDED), and resets the stream, which the server sees as a cancellation."""
    key = f"betterproto-deadline-{uuid.uuid4()}"
    request = InvokeRequest(function="wait_async", json=json.dumps({"probe": key, "chunks": 1}))
    received = []

    async def read_all() -> None:
        async for chunk in app_stub.invoke(request, timeout=0.5):
            received.append(payload(chunk))

    with pytest.raises(TimeoutError):
        await read_all()
    assert received == [("json", 0)]
    assert await asyncio.to_thread(app.probe(key).cleaned_up.wait, 5)


async def test_list_functions_describes_the_demo(demo_stub: ServerFunctionsStub) -> None:
    response = await demo_stub.list_functions(ListFunctionsRequest(), timeout=30)
    names = [info.name for info in response.functions]
    assert names == ["process_large_file", "stream_chat", "stream_data"]
    infos = {info.name: info for info in response.functions}
    assert infos["stream_data"].method is Method.GET
    assert infos["stream_chat"].method is Method.POST
    assert all(info.streaming for info in response.functions)
    chat = infos["stream_chat"]
    assert chat.takes_input
    assert chat.input_required
    schema = from_value(Value(struct_value=chat.input_schema))
    assert "message" in schema["properties"]
    assert not infos["stream_data"].takes_input


async def test_list_functions_lists_the_test_app(app_stub: ServerFunctionsStub) -> None:
    response = await app_stub.list_functions(ListFunctionsRequest(), timeout=30)
    names = [info.name for info in response.functions]
    assert names == [record.name for record in app.fns]
    assert {"fail_after", "wait_async", "echo_async"} <= set(names)
