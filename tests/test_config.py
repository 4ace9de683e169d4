"""The option objects of ``grpc_serverfn.config``: their defaults, their validation, and that
they reach the server through ``Server``, ``run_in_thread`` and ``run_in_loop``."""

from __future__ import annotations

import dataclasses
import inspect
import math
import uuid

import pytest

from grpc_serverfn import (
    Limits,
    MemoryStreamStore,
    ResourceExhausted,
    Server,
    ServerOptions,
    StreamOptions,
)
from grpc_serverfn.config import (
    DEFAULT_IDLE_TTL,
    DEFAULT_MAX_CONCURRENT_CALLS,
    DEFAULT_MAX_INPUT_DEPTH,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_PENDING_CALLS,
    DEFAULT_MAX_PENDING_SECONDS,
    DEFAULT_RETENTION,
    DEFAULT_WORKER_THREADS,
)
from grpc_serverfn.testing import run_in_loop, run_in_thread
from tests import app

PROMPTLY = 5.0


def test_the_defaults_are_the_documented_constants() -> None:
    assert Limits() == Limits(
        max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES,
        max_concurrent_calls=DEFAULT_MAX_CONCURRENT_CALLS,
        max_input_depth=DEFAULT_MAX_INPUT_DEPTH,
        worker_threads=DEFAULT_WORKER_THREADS,
        max_pending_calls=DEFAULT_MAX_PENDING_CALLS,
        max_pending_seconds=DEFAULT_MAX_PENDING_SECONDS,
    )
    assert (DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_CONCURRENT_CALLS) == (4 * 1024 * 1024, 10_000)
    assert (DEFAULT_MAX_INPUT_DEPTH, DEFAULT_WORKER_THREADS) == (64, 32)
    assert (DEFAULT_MAX_PENDING_CALLS, DEFAULT_MAX_PENDING_SECONDS) == (10_000, 300)
    assert StreamOptions() == StreamOptions(None, DEFAULT_IDLE_TTL, DEFAULT_RETENTION)
    assert (DEFAULT_IDLE_TTL, DEFAULT_RETENTION) == (30.0, 600.0)


@pytest.mark.parametrize(
    "field",
    [
        "max_message_bytes",
        "max_concurrent_calls",
        "max_input_depth",
        "worker_threads",
        "max_pending_calls",
        "max_pending_seconds",
    ],
)
@pytest.mark.parametrize("value", [0, -1, 1.5, True, "8"])
def test_a_limit_must_be_a_positive_whole_number(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"^Limits\.{field} must be a positive whole number"):
        Limits(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["idle_ttl", "retention"])
@pytest.mark.parametrize("value", [0, -0.5, math.nan, math.inf, True, "30"])
def test_stream_lifetimes_must_be_positive_finite_seconds(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"^StreamOptions\.{field} must be a positive, finite"):
        StreamOptions(**{field: value})  # type: ignore[arg-type]


def test_the_option_objects_are_frozen() -> None:
    limits, streams = Limits(max_input_depth=8), StreamOptions(idle_ttl=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.max_input_depth = 9  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        streams.idle_ttl = 2  # type: ignore[misc]
    assert dataclasses.replace(limits, worker_threads=4) == Limits(
        max_input_depth=8, worker_threads=4
    )


def test_server_options_names_every_keyword_server_takes() -> None:
    parameters = inspect.signature(Server).parameters.values()
    keywords = {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(ServerOptions.__annotations__) == keywords
    assert ServerOptions.__required_keys__ == frozenset()


def test_run_in_thread_gives_its_limits_to_the_server() -> None:
    limits = Limits(max_concurrent_calls=1)
    with run_in_thread(app.fns, limits=limits) as running, running.client() as client:
        assert running.server.limits is limits
        key = uuid.uuid4().hex
        stream = client.invoke("wait_async", {"probe": key})
        assert next(stream) == 0  # the one call the server takes
        with pytest.raises(ResourceExhausted, match="limit of 1 concurrent calls"):
            client.call("echo_async", "second")
        stream.cancel()
        assert app.probe(key).cleaned_up.wait(PROMPTLY)


async def test_run_in_loop_gives_its_options_to_the_server_over_its_test_defaults() -> None:
    streams = StreamOptions(store=MemoryStreamStore(), idle_ttl=0.5)
    async with run_in_loop(app.fns, streams=streams, grace=0.2) as running:
        assert running.server.streams is streams
        assert running.server.grace == 0.2
        assert running.server.host == "127.0.0.1"
        assert running.port != 0
    async with run_in_loop(app.fns) as running:
        assert running.server.grace == 1.0  # the test helpers' own default grace
        assert running.server.limits == Limits()
        assert running.server.streams == StreamOptions()
