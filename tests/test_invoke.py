"""Invoke round trips: every kind of function, chunk order, sequence numbers, both encodings."""

from __future__ import annotations

import orjson
import pytest
from google.protobuf import json_format, struct_pb2

from grpc_serverfn._proto.serverfn.v1 import serverfn_pb2
from tests.conftest import Caller


@pytest.mark.parametrize("function", ["count_async", "count_sync"])
def test_generators_yield_every_value_as_one_chunk_in_order(invoke: Caller, function: str) -> None:
    outcome = invoke(function, {"n": 250})
    assert outcome.error is None
    assert outcome.chunks == list(range(250))


@pytest.mark.parametrize("function", ["echo_async", "echo_sync"])
def test_plain_functions_return_exactly_one_chunk(invoke: Caller, function: str) -> None:
    data = {"message": "hi", "nested": [1, 2.5, None, True]}
    assert invoke(function, data).chunks == [data]


@pytest.mark.parametrize("function", ["count_async", "count_sync"])
def test_an_empty_generator_ends_ok_with_no_chunks(invoke: Caller, function: str) -> None:
    outcome = invoke(function, {"n": 0})
    assert outcome == type(outcome)([], None)


def test_a_function_without_input_is_called_without_data(invoke: Caller) -> None:
    assert invoke("no_input").chunks == [{"ok": True}]


@pytest.mark.parametrize("encoding", ["json", "value"])
def test_rich_python_values_arrive_as_the_same_json_in_both_encodings(
    invoke: Caller, encoding: str
) -> None:
    chunks = invoke("rich_values", encoding=encoding).chunks
    assert chunks == [
        {"a": 1, "b": [1.5, None, True, "x"]},
        [1, 2, 3],
        "text",
        42,
        None,
        {"x": 1, "y": 2},
        {"name": "m", "tags": ["t"]},
        "2026-12-01T12:30:00+00:00",
        "12345678-1234-5678-1234-567812345678",
        "red",
        {"nested": {"point": {"x": 3, "y": 4}, "when": "2026-01-02"}},
    ]
    # Integral numbers come back as int in both encodings, fractional ones as float.
    assert type(chunks[0]["a"]) is int
    assert type(chunks[0]["b"][0]) is float


def test_sequence_numbers_count_from_zero_within_each_call(stub: object) -> None:
    for _ in range(2):
        request = serverfn_pb2.InvokeRequest(function="count_async", json='{"n": 5}')
        chunks = list(stub.Invoke(request))  # type: ignore[attr-defined]
        assert [chunk.seq for chunk in chunks] == [0, 1, 2, 3, 4]


def test_json_input_gives_json_chunks_by_default(stub: object) -> None:
    request = serverfn_pb2.InvokeRequest(function="count_async", json='{"n": 2}')
    chunks = list(stub.Invoke(request))  # type: ignore[attr-defined]
    assert [chunk.WhichOneof("payload") for chunk in chunks] == ["json", "json"]
    assert [chunk.json for chunk in chunks] == ["0", "1"]


def test_value_input_gives_value_chunks_by_default(stub: object) -> None:
    request = serverfn_pb2.InvokeRequest(function="echo_async")
    json_format.ParseDict({"message": "hi", "n": 3}, request.value)
    (chunk,) = stub.Invoke(request)  # type: ignore[attr-defined]
    assert chunk.WhichOneof("payload") == "value"
    assert json_format.MessageToDict(chunk.value) == {"message": "hi", "n": 3.0}


def test_no_input_gives_json_chunks_by_default(stub: object) -> None:
    (chunk,) = stub.Invoke(serverfn_pb2.InvokeRequest(function="no_input"))  # type: ignore[attr-defined]
    assert chunk.WhichOneof("payload") == "json"
    assert orjson.loads(chunk.json) == {"ok": True}


def test_an_empty_json_string_means_no_input(stub: object) -> None:
    request = serverfn_pb2.InvokeRequest(function="no_input", json="")
    (chunk,) = stub.Invoke(request)  # type: ignore[attr-defined]
    assert orjson.loads(chunk.json) == {"ok": True}


@pytest.mark.parametrize(
    ("accept", "expected"),
    [(serverfn_pb2.ENCODING_VALUE, "value"), (serverfn_pb2.ENCODING_JSON, "json")],
)
def test_accept_overrides_the_mirrored_encoding(stub: object, accept: int, expected: str) -> None:
    json_request = serverfn_pb2.InvokeRequest(function="echo_async", json='"x"', accept=accept)
    value_request = serverfn_pb2.InvokeRequest(
        function="echo_async", value=struct_pb2.Value(string_value="x"), accept=accept
    )
    for request in (json_request, value_request):
        (chunk,) = stub.Invoke(request)  # type: ignore[attr-defined]
        assert chunk.WhichOneof("payload") == expected


def test_value_chunks_carry_native_json_not_escaped_text(stub: object) -> None:
    request = serverfn_pb2.InvokeRequest(
        function="count_async", json='{"n": 1}', accept=serverfn_pb2.ENCODING_VALUE
    )
    (chunk,) = stub.Invoke(request)  # type: ignore[attr-defined]
    assert chunk.value.number_value == 0
    assert json_format.MessageToJson(chunk, indent=None) == '{"value": 0.0}'


def test_big_integers_stay_exact_in_the_json_encoding(invoke: Caller) -> None:
    big = 2**63 - 1
    assert invoke("echo_async", {"big": big}).chunks == [{"big": big}]
