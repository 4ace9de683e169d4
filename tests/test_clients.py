"""The two clients' API: single values, listing, metadata, trailers, misuse, unreachable servers."""

from __future__ import annotations

import socket

import grpc
import pytest

from grpc_serverfn import AsyncClient, Client, DeadlineExceeded, Unavailable
from grpc_serverfn._proto.serverfn.v1 import serverfn_pb2
from grpc_serverfn.testing import RunningServer
from tests.conftest import Caller


def test_call_returns_the_single_value_of_a_plain_function(server: RunningServer) -> None:
    with Client(server.target) as client:
        assert client.call("echo_sync", {"a": [1]}) == {"a": [1]}
        assert client.call("echo_async") is None  # no input reaches `data: Any` as null


async def test_async_call_returns_the_single_value(server: RunningServer) -> None:
    async with AsyncClient(server.target) as client:
        assert await client.call("echo_async", "x") == "x"


def test_call_on_a_stream_of_several_chunks_says_to_iterate(server: RunningServer) -> None:
    with Client(server.target) as client, pytest.raises(ValueError, match="iterate invoke"):
        client.call("count_async", {"n": 3})


async def test_async_call_on_a_stream_says_to_iterate(server: RunningServer) -> None:
    async with AsyncClient(server.target) as client:
        with pytest.raises(ValueError, match="iterate invoke"):
            await client.call("count_async", {"n": 3})


def test_call_on_an_empty_stream_says_nothing_came(server: RunningServer) -> None:
    with Client(server.target) as client, pytest.raises(ValueError, match="without producing"):
        client.call("count_async", {"n": 0})


def test_functions_lists_the_server_offer_with_schemas(server: RunningServer) -> None:
    with Client(server.target) as client:
        functions = {info.name: info for info in client.functions()}
    assert list(functions) == sorted(functions)
    count = functions["count_async"]
    assert count.streaming is True
    assert count.method == "GET"
    assert count.description == "Yield 0..n-1 from an async generator."
    assert count.takes_input
    assert count.input_required
    assert count.input_schema is not None
    assert count.input_schema["required"] == ["n"]
    assert count.output_schema == {"type": "integer"}
    assert functions["no_input"].takes_input is False
    assert functions["no_input"].input_schema is None
    assert functions["echo_sync"].streaming is False


def test_functions_say_which_are_resumable(server: RunningServer) -> None:
    with Client(server.target) as client:
        functions = {info.name: info for info in client.functions()}
    assert functions["resumable_ticks"].resumable is True
    assert functions["count_async"].resumable is False


async def test_async_functions_say_which_are_resumable(server: RunningServer) -> None:
    async with AsyncClient(server.target) as client:
        functions = {info.name: info for info in await client.functions()}
    assert functions["resumable_ticks"].resumable is True
    assert functions["count_async"].resumable is False


async def test_async_functions_match_the_sync_listing(server: RunningServer) -> None:
    async with AsyncClient(server.target) as client:
        async_listing = await client.functions()
    with Client(server.target) as client:
        assert client.functions() == async_listing


def test_the_handler_sees_metadata_peer_and_deadline(invoke: Caller) -> None:
    metadata = [("x-token", "abc"), ("x-tag", "one"), ("x-tag", "two")]
    (info,) = invoke("context_info", metadata=metadata, timeout=30).chunks
    assert info["function"] == "context_info"
    assert info["token"] == "abc"
    assert info["all_tags"] == ["one", "two"]
    assert info["peer"].startswith(("ipv4:127.0.0.1:", "ipv6:"))
    assert 0 < info["time_remaining"] <= 30.5  # grpc-timeout rounds up a little


def test_client_default_metadata_and_timeout_apply_to_every_call(server: RunningServer) -> None:
    with Client(server.target, metadata={"x-token": "default"}, timeout=20) as client:
        info = client.call("context_info", metadata=[("x-tag", "per-call")])
        assert info["token"] == "default"
        assert info["all_tags"] == ["per-call"]
        assert 0 < info["time_remaining"] <= 20.5
        with pytest.raises(DeadlineExceeded):
            list(client.invoke("wait_async", {"probe": "timeout-default"}, timeout=0.2))


def test_trailing_metadata_set_by_the_handler_reaches_the_client(server: RunningServer) -> None:
    with Client(server.target) as client:
        stream = client.invoke("context_info")
        assert len(list(stream)) == 1
        trailers = dict(stream.trailing_metadata())
    assert trailers["x-handled-by"] == "context_info"
    assert trailers["x-checksum-bin"] == b"\x00\x01"


async def test_async_trailing_metadata(server: RunningServer) -> None:
    async with AsyncClient(server.target) as client:
        stream = client.invoke("context_info")
        assert len([chunk async for chunk in stream]) == 1
        trailers = await stream.trailing_metadata()
    assert dict(trailers)["x-handled-by"] == "context_info"


def test_trailers_set_by_the_handler_also_travel_with_an_error(stub: object) -> None:
    request = serverfn_pb2.InvokeRequest(function="trailer_then_fail")
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Invoke(request))  # type: ignore[attr-defined]
    error = caught.value
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    trailers = dict(error.trailing_metadata())  # type: ignore[attr-defined]
    assert trailers["x-attempt"] == "1"
    assert "grpc-status-details-bin" in trailers


def test_mixing_sync_and_async_fails_fast_with_a_clear_message(server: RunningServer) -> None:
    async_client = AsyncClient(server.target)
    with pytest.raises(TypeError, match="async with"), async_client:
        pass
    with Client(server.target) as client, pytest.raises(TypeError, match="async for"):
        client.invoke("no_input").__aiter__()


async def test_mixing_async_client_with_plain_for_fails_fast(server: RunningServer) -> None:
    async with AsyncClient(server.target) as client:
        stream = client.invoke("no_input")
        with pytest.raises(TypeError, match="'async for'"):
            iter(stream)
        assert [chunk async for chunk in stream] == [{"ok": True}]
    with pytest.raises(TypeError, match="'with'"):
        async with Client(server.target):
            pass


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_server_is_unavailable() -> None:
    with Client(f"127.0.0.1:{_unused_port()}", timeout=10) as client:
        with pytest.raises(Unavailable):
            list(client.invoke("anything"))
        with pytest.raises(Unavailable):
            client.functions()


async def test_an_unreachable_server_is_unavailable_async() -> None:
    async with AsyncClient(f"127.0.0.1:{_unused_port()}", timeout=10) as client:
        with pytest.raises(Unavailable):
            [chunk async for chunk in client.invoke("anything")]


def test_an_unknown_encoding_is_refused_up_front() -> None:
    with pytest.raises(ValueError, match="encoding"):
        Client("127.0.0.1:1", encoding="xml")  # type: ignore[arg-type]


def test_health_reports_serving(server: RunningServer) -> None:
    with Client(server.target) as client:
        assert client.health() == "SERVING"
        assert client.health("serverfn.v1.ServerFunctions") == "SERVING"


async def test_async_health_reports_serving(server: RunningServer) -> None:
    async with AsyncClient(server.target) as client:
        assert await client.health() == "SERVING"
