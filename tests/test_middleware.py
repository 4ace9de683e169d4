"""Middleware: wraps every call, sees each chunk as it passes, may reject or change the call."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from grpc_serverfn import (
    Call,
    CallNext,
    Client,
    InvalidArgument,
    PermissionDenied,
    Registry,
    Unauthenticated,
)
from grpc_serverfn.testing import RunningServer, run_in_thread
from tests.conftest import Caller

EVENTS: list[str] = []
SEEN_CHUNKS: list[tuple[str, Any]] = []
CLEANED_UP = threading.Event()

fns = Registry()


@fns.middleware
async def record_calls(call: Call, call_next: CallNext) -> AsyncIterator[Any]:
    """Outermost: records the order of events around every call."""
    EVENTS.append(f"outer:start:{call.function.name}")
    try:
        async for chunk in call_next(call):
            SEEN_CHUNKS.append((call.function.name, chunk))
            yield chunk
    finally:
        EVENTS.append(f"outer:end:{call.function.name}")


@fns.middleware
async def require_token(call: Call, call_next: CallNext) -> AsyncIterator[Any]:
    """Rejects calls without the right token, before the input is validated."""
    token = call.ctx.metadata.get("authorization")
    if token is None:
        raise Unauthenticated("missing authorization metadata")
    if token != "Bearer s3cret":
        raise PermissionDenied("wrong token")
    EVENTS.append(f"auth:ok:{call.function.name}")
    async for chunk in call_next(call):
        yield chunk


@fns.middleware
async def double_numbers(call: Call, call_next: CallNext) -> AsyncIterator[Any]:
    """Innermost: changes chunks on their way out, for one function only."""
    async for chunk in call_next(call):
        yield chunk * 2 if call.function.name == "numbers" and isinstance(chunk, int) else chunk


@fns.server_fn
async def numbers(data: int) -> AsyncIterator[int]:
    for i in range(data):
        yield i


@fns.server_fn
def sync_numbers(data: int) -> Iterator[int]:
    yield from range(data)


@fns.server_fn
async def slow(data: int) -> AsyncIterator[int]:
    try:
        yield 0
        await asyncio.sleep(data)
    finally:
        CLEANED_UP.set()


AUTH = {"authorization": "Bearer s3cret"}


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with run_in_thread(fns) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_records() -> None:
    EVENTS.clear()
    SEEN_CHUNKS.clear()
    CLEANED_UP.clear()


def test_middleware_runs_around_the_call_in_order_and_sees_each_chunk(invoke: Caller) -> None:
    outcome = invoke("numbers", 3, metadata=AUTH)
    assert outcome.error is None
    assert outcome.chunks == [0, 2, 4]  # changed by the innermost middleware
    assert SEEN_CHUNKS == [("numbers", 0), ("numbers", 2), ("numbers", 4)]
    assert EVENTS == ["outer:start:numbers", "auth:ok:numbers", "outer:end:numbers"]


def test_middleware_wraps_sync_generators_too(invoke: Caller) -> None:
    assert invoke("sync_numbers", 3, metadata=AUTH).chunks == [0, 1, 2]
    assert [chunk for _, chunk in SEEN_CHUNKS] == [0, 1, 2]


def test_middleware_rejects_a_call_without_credentials(invoke: Caller) -> None:
    outcome = invoke("numbers", 3)
    assert isinstance(outcome.error, Unauthenticated)
    assert outcome.error.message == "missing authorization metadata"
    assert outcome.chunks == []
    assert EVENTS == ["outer:start:numbers", "outer:end:numbers"]


def test_middleware_rejects_a_call_with_the_wrong_credentials(invoke: Caller) -> None:
    outcome = invoke("numbers", 3, metadata={"authorization": "Bearer guess"})
    assert isinstance(outcome.error, PermissionDenied)


def test_middleware_runs_before_validation(invoke: Caller) -> None:
    """An unauthenticated caller learns nothing about the input a function expects."""
    assert isinstance(invoke("numbers", "not a number").error, Unauthenticated)
    assert isinstance(invoke("numbers", "not a number", metadata=AUTH).error, InvalidArgument)


def test_middleware_streams_without_buffering(server: RunningServer) -> None:
    """The first chunk reaches the client while the handler is still running."""
    with Client(server.target, metadata=AUTH) as client:
        stream = client.invoke("slow", 30)
        assert next(stream) == 0
        assert SEEN_CHUNKS == [("slow", 0)]
        stream.cancel()
        assert CLEANED_UP.wait(5.0), "the handler behind the middleware was not closed"
    # The middleware's own cleanup ran as well.
    for _ in range(50):
        if "outer:end:slow" in EVENTS:
            break
        threading.Event().wait(0.05)
    assert "outer:end:slow" in EVENTS


def test_middleware_cannot_be_added_after_the_server_started(server: RunningServer) -> None:
    async def late(call: Call, call_next: CallNext) -> AsyncIterator[Any]:
        async for chunk in call_next(call):
            yield chunk

    with pytest.raises(RuntimeError, match="frozen"):
        fns.middleware(late)
