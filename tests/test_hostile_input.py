"""Malformed and hostile requests: every one ends with a defined status and a clean message.

Bytes that are not an InvokeRequest at all, valid requests with their bytes damaged, and well-
formed requests full of garbage (random names, broken JSON, bad UTF-8 surrogates, deep nesting,
huge numbers). None may end as UNKNOWN, none may leak exception text, and the server serves the
next call. A seeded generator keeps the run reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import grpc
import pytest

from grpc_serverfn._proto.serverfn.v1 import serverfn_pb2
from grpc_serverfn.testing import RunningServer

DEFINED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
}
LEAKS = ("Traceback", "Unexpected <class", "Exception ", 'File "')


@pytest.fixture
def raw_invoke(server: RunningServer) -> Iterator[grpc.UnaryStreamMultiCallable]:
    """Invoke with no serializer: the test sends the request's bytes itself."""
    with grpc.insecure_channel(server.target) as channel:
        yield channel.unary_stream(
            "/serverfn.v1.ServerFunctions/Invoke",
            request_serializer=None,
            response_deserializer=None,
        )


def outcome(invoke: grpc.UnaryStreamMultiCallable, payload: bytes) -> tuple[grpc.StatusCode, str]:
    try:
        for _ in invoke(payload, timeout=10):
            pass
    except grpc.RpcError as error:
        return error.code(), error.details() or ""  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, ""


def random_bytes(rng: random.Random, count: int) -> Iterator[bytes]:
    for _ in range(count):
        yield rng.randbytes(rng.choice([1, 2, 5, 20, 100, 1000]))


def damaged(rng: random.Random, count: int) -> Iterator[bytes]:
    """Valid requests with bytes flipped, cut short or spliced."""
    valid = [
        serverfn_pb2.InvokeRequest(function="count_async", json='{"n": 3}').SerializeToString(),
        serverfn_pb2.InvokeRequest(function="echo_async", json='{"a": [1, 2]}').SerializeToString(),
    ]
    for _ in range(count):
        payload = bytearray(rng.choice(valid))
        action = rng.randrange(3)
        if action == 0:
            payload[rng.randrange(len(payload))] ^= 1 << rng.randrange(8)
        elif action == 1:
            del payload[rng.randrange(1, len(payload)) :]
        else:
            payload[rng.randrange(len(payload)) :] = rng.randbytes(rng.randrange(1, 30))
        yield bytes(payload)


GARBAGE_JSON = [
    "{",
    '{"n": }',
    "[" * 5000 + "]" * 5000,
    '{"n": 1e999999}',
    '{"n": 123456789012345678901234567890}',
    '"\\ud800"',
    "\x00",
    "NaN",
    '{"n": 3, "probe": "' + "x" * 100_000 + '"}',
]


def garbage_requests(rng: random.Random, count: int) -> Iterator[bytes]:
    names = ["count_async", "echo_async", "no_input", "", "../etc/passwd", "é" * 50, "x" * 5000]
    for index in range(count):
        request = serverfn_pb2.InvokeRequest(
            function=rng.choice(names),
            accept=rng.choice([0, 1, 2, 3, 99]),  # type: ignore[arg-type]
            max_batch=rng.choice([0, 1, 2, 4096]),
        )
        if index % 2:
            request.json = rng.choice(GARBAGE_JSON)
        else:
            request.value.list_value.values.add().number_value = rng.random() * 10**300
        yield request.SerializeToString()


def test_every_hostile_request_ends_with_a_defined_status_and_no_leak(
    raw_invoke: grpc.UnaryStreamMultiCallable,
) -> None:
    rng = random.Random(20261201)
    payloads = [
        *random_bytes(rng, 400),
        *damaged(rng, 400),
        *garbage_requests(rng, 200),
        b"",
        b"\xff" * 10_000,
    ]
    seen: dict[grpc.StatusCode, int] = {}
    for payload in payloads:
        code, details = outcome(raw_invoke, payload)
        assert code in DEFINED, (payload[:40], code, details)
        assert not any(leak in details for leak in LEAKS), (payload[:40], details)
        seen[code] = seen.get(code, 0) + 1
    # The mix really exercised the refusals, and the server is still serving.
    assert seen.get(grpc.StatusCode.INVALID_ARGUMENT, 0) > 100
    assert seen.get(grpc.StatusCode.NOT_FOUND, 0) > 10
    ok = serverfn_pb2.InvokeRequest(function="count_async", json='{"n": 2}').SerializeToString()
    assert outcome(raw_invoke, ok) == (grpc.StatusCode.OK, "")


def test_list_functions_refuses_undecodable_bytes_cleanly(server: RunningServer) -> None:
    with grpc.insecure_channel(server.target) as channel:
        list_functions = channel.unary_unary(
            "/serverfn.v1.ServerFunctions/ListFunctions",
            request_serializer=None,
            response_deserializer=None,
        )
        with pytest.raises(grpc.RpcError) as caught:
            list_functions(b"\xff\xff", timeout=10)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "not a valid serverfn.v1.ListFunctionsRequest" in caught.value.details()  # type: ignore[attr-defined]
