"""The server around the functions: health, graceful shutdown, reflection, TLS, message limits
and binding. Every test talks to a real server over a real channel."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import grpc.aio
import pytest
import trustme
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from grpc_serverfn import (
    AsyncClient,
    Client,
    Limits,
    Registry,
    ResourceExhausted,
    Server,
    ServerFnError,
    ServerTLS,
    Unavailable,
)
from grpc_serverfn.testing import RunningServer, run_in_loop, run_in_thread
from tests.conftest import drain

SERVICE = "serverfn.v1.ServerFunctions"
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
PROMPTLY = 10.0  # seconds: a generous bound for things that should happen at once


def simple_registry() -> Registry:
    registry = Registry()

    @registry.server_fn
    def ping() -> str:
        return "pong"

    @registry.server_fn
    async def count(data: int) -> AsyncIterator[int]:
        for i in range(data):
            yield i

    @registry.server_fn
    def length(data: str) -> int:
        return len(data)

    return registry


# --- Health ---


async def test_health_check_reports_serving_for_the_server_and_the_service() -> None:
    async with (
        run_in_loop(simple_registry()) as running,
        grpc.aio.insecure_channel(running.target) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE):
            response = await health.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=PROMPTLY
            )
            assert response.status == SERVING, service
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await health.Check(
                health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=PROMPTLY
            )
        assert raised.value.code() is grpc.StatusCode.NOT_FOUND


async def call_until_refused(target: str) -> Unavailable:
    """Make quick calls on fresh channels until one is refused (the server stops accepting
    calls a moment after it reports NOT_SERVING); fail if none is refused promptly."""
    deadline = time.monotonic() + PROMPTLY
    while True:
        async with AsyncClient(target, timeout=PROMPTLY) as client:
            try:
                await client.call("ping")
            except Unavailable as error:
                return error
        if time.monotonic() > deadline:
            pytest.fail("new calls were still accepted while the server was stopping")
        await asyncio.sleep(0.02)


async def test_graceful_stop_reports_not_serving_refuses_new_calls_and_finishes_in_flight() -> None:
    release = asyncio.Event()
    finished = asyncio.Event()
    registry = simple_registry()

    @registry.server_fn
    async def in_flight() -> AsyncIterator[int]:
        try:
            yield 0
            await release.wait()
            yield 1
            yield 2
        finally:
            finished.set()

    server = Server(registry, port=0, grace=30.0)
    await server.start()
    try:
        async with (
            AsyncClient(server.address, timeout=60) as client,
            grpc.aio.insecure_channel(server.address) as health_channel,
        ):
            watch = health_pb2_grpc.HealthStub(health_channel).Watch(
                health_pb2.HealthCheckRequest(service=SERVICE)
            )
            first = await asyncio.wait_for(watch.read(), PROMPTLY)
            assert first.status == SERVING

            stream = client.invoke("in_flight")
            assert await asyncio.wait_for(anext(stream), PROMPTLY) == 0

            stopping = asyncio.create_task(server.stop(30.0))
            update = await asyncio.wait_for(watch.read(), PROMPTLY)
            assert update.status == NOT_SERVING
            watch.cancel()  # a Watch is a stream too: leave it open and it holds up the stop

            refused = await call_until_refused(server.address)
            assert refused.code is grpc.StatusCode.UNAVAILABLE
            assert not stopping.done()
            assert not finished.is_set()

            release.set()
            rest = [chunk async for chunk in stream]
            assert rest == [1, 2]
            assert finished.is_set()
            await asyncio.wait_for(stopping, PROMPTLY)
    finally:
        await server.stop(0)


async def test_a_stream_that_outlives_the_grace_is_cancelled_and_cleaned_up() -> None:
    started = asyncio.Event()
    cleaned_up = asyncio.Event()
    cancelled = asyncio.Event()
    registry = simple_registry()

    @registry.server_fn
    async def forever() -> AsyncIterator[int]:
        try:
            yield 0
            started.set()
            await asyncio.sleep(300)
            yield 1
        except asyncio.CancelledError:
            cancelled.set()
            raise
        finally:
            cleaned_up.set()

    server = Server(registry, port=0)
    await server.start()
    try:
        async with AsyncClient(server.address, timeout=60) as client:
            stream = client.invoke("forever")
            assert await asyncio.wait_for(anext(stream), PROMPTLY) == 0
            await asyncio.wait_for(started.wait(), PROMPTLY)

            await asyncio.wait_for(server.stop(0.3), PROMPTLY)
            await asyncio.wait_for(cleaned_up.wait(), PROMPTLY)
            assert cancelled.is_set()
            with pytest.raises(ServerFnError):
                await asyncio.wait_for(anext(stream), PROMPTLY)
    finally:
        await server.stop(0)


def test_a_sync_generator_that_outlives_the_grace_is_closed_and_its_finally_runs() -> None:
    started = threading.Event()
    cleaned_up = threading.Event()
    registry = simple_registry()

    @registry.server_fn
    def endless() -> Iterator[int]:
        started.set()
        try:
            i = 0
            while True:
                yield i
                i += 1
                time.sleep(0.01)
        finally:
            cleaned_up.set()

    with run_in_thread(registry, grace=0.3) as running:
        client = running.client(timeout=60)
        stream = client.invoke("endless")
        assert next(stream) == 0
        assert started.wait(PROMPTLY)
    # The server has stopped (grace 0.3 s) while the caller still holds the stream open.
    try:
        assert cleaned_up.wait(PROMPTLY)
        with pytest.raises(ServerFnError):
            drain(stream, into=[])
    finally:
        client.close()


# --- Reflection ---


def reflect(target: str, **request: object) -> reflection_pb2.ServerReflectionResponse:
    """One ServerReflectionInfo request and its response."""
    with grpc.insecure_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = list(
            stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(**request)]),  # type: ignore[arg-type]
                timeout=PROMPTLY,
            )
        )
    assert len(responses) == 1
    return responses[0]


def file_descriptors(
    response: reflection_pb2.ServerReflectionResponse,
) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    assert response.WhichOneof("message_response") == "file_descriptor_response", response
    files = {}
    for serialized in response.file_descriptor_response.file_descriptor_proto:
        proto = descriptor_pb2.FileDescriptorProto.FromString(serialized)
        files[proto.name] = proto
    return files


@pytest.fixture(scope="module")
def reflecting_server() -> Iterator[RunningServer]:
    with run_in_thread(simple_registry()) as running:
        yield running


def test_reflection_lists_the_services(reflecting_server: RunningServer) -> None:
    response = reflect(reflecting_server.target, list_services="")
    names = {service.name for service in response.list_services_response.service}
    assert {SERVICE, HEALTH_SERVICE, REFLECTION_SERVICE} <= names


def test_reflection_describes_the_serverfn_service(reflecting_server: RunningServer) -> None:
    files = file_descriptors(reflect(reflecting_server.target, file_containing_symbol=SERVICE))
    assert "serverfn/v1/serverfn.proto" in files
    proto = files["serverfn/v1/serverfn.proto"]
    assert proto.package == "serverfn.v1"
    [service] = proto.service
    assert service.name == "ServerFunctions"
    assert {method.name for method in service.method} == {"Invoke", "ListFunctions", "CancelStream"}
    # Its dependency can be fetched too, as grpcurl does.
    dependency = file_descriptors(
        reflect(reflecting_server.target, file_by_filename="google/protobuf/struct.proto")
    )
    assert "google/protobuf/struct.proto" in dependency


def test_reflection_finds_the_error_detail_types(reflecting_server: RunningServer) -> None:
    files = file_descriptors(
        reflect(reflecting_server.target, file_containing_symbol="google.rpc.BadRequest")
    )
    assert "google/rpc/error_details.proto" in files
    messages = {message.name for message in files["google/rpc/error_details.proto"].message_type}
    assert {"BadRequest", "ErrorInfo"} <= messages


def test_reflection_can_be_turned_off() -> None:
    with run_in_thread(simple_registry(), reflection=False) as running:
        with pytest.raises(grpc.RpcError) as raised:
            reflect(running.target, list_services="")
        assert raised.value.code() is grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
        with running.client(timeout=PROMPTLY) as client:
            assert client.call("ping") == "pong"


# --- TLS ---


@pytest.fixture(scope="module")
def server_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_cert(server_ca: trustme.CA) -> trustme.LeafCert:
    return server_ca.issue_cert("localhost", "127.0.0.1")


def pem_chain(cert: trustme.LeafCert) -> bytes:
    return b"".join(blob.bytes() for blob in cert.cert_chain_pems)


def server_tls(cert: trustme.LeafCert, client_ca: trustme.CA | None = None) -> ServerTLS:
    return ServerTLS(
        pem_chain(cert),
        cert.private_key_pem.bytes(),
        client_ca.cert_pem.bytes() if client_ca is not None else None,
    )


def test_tls_server_serves_a_client_that_trusts_its_ca(
    server_ca: trustme.CA, server_cert: trustme.LeafCert
) -> None:
    credentials = grpc.ssl_channel_credentials(server_ca.cert_pem.bytes())
    with (
        run_in_thread(simple_registry(), tls=server_tls(server_cert)) as running,
        Client(f"localhost:{running.port}", credentials=credentials, timeout=PROMPTLY) as client,
    ):
        assert list(client.invoke("count", 3)) == [0, 1, 2]
        assert client.call("ping") == "pong"


def test_an_insecure_client_cannot_call_a_tls_server(server_cert: trustme.LeafCert) -> None:
    with (
        run_in_thread(simple_registry(), tls=server_tls(server_cert)) as running,
        Client(f"localhost:{running.port}", timeout=PROMPTLY) as client,
        pytest.raises(Unavailable),
    ):
        client.call("ping")


def test_a_client_that_does_not_trust_the_server_ca_is_refused(
    server_cert: trustme.LeafCert,
) -> None:
    stranger = grpc.ssl_channel_credentials(trustme.CA().cert_pem.bytes())
    with (
        run_in_thread(simple_registry(), tls=server_tls(server_cert)) as running,
        Client(f"localhost:{running.port}", credentials=stranger, timeout=PROMPTLY) as client,
        pytest.raises(Unavailable),
    ):
        client.call("ping")


def test_mutual_tls_admits_only_clients_with_a_cert_from_the_client_ca(
    server_ca: trustme.CA, server_cert: trustme.LeafCert
) -> None:
    client_ca = trustme.CA()
    good_cert = client_ca.issue_cert("client.example")
    foreign_cert = trustme.CA().issue_cert("client.example")
    root = server_ca.cert_pem.bytes()

    def credentials(cert: trustme.LeafCert | None) -> grpc.ChannelCredentials:
        if cert is None:
            return grpc.ssl_channel_credentials(root)
        return grpc.ssl_channel_credentials(
            root, private_key=cert.private_key_pem.bytes(), certificate_chain=pem_chain(cert)
        )

    with run_in_thread(simple_registry(), tls=server_tls(server_cert, client_ca)) as running:
        target = f"localhost:{running.port}"
        with Client(target, credentials=credentials(good_cert), timeout=PROMPTLY) as client:
            assert list(client.invoke("count", 2)) == [0, 1]
        for cert in (None, foreign_cert):
            with (
                Client(target, credentials=credentials(cert), timeout=PROMPTLY) as client,
                pytest.raises(Unavailable),
            ):
                client.call("ping")


# --- Message size limit ---


def test_a_request_over_max_message_bytes_is_rejected_and_the_server_keeps_serving() -> None:
    limit = 64 * 1024
    with (
        run_in_thread(simple_registry(), limits=Limits(max_message_bytes=limit)) as running,
        running.client(timeout=PROMPTLY) as client,
    ):
        assert client.call("length", "x" * 1000) == 1000
        with pytest.raises(ResourceExhausted):
            client.call("length", "x" * (2 * limit))
        assert client.call("length", "y" * 2000) == 2000
        with running.client(timeout=PROMPTLY) as other:
            assert other.call("ping") == "pong"


def test_a_chunk_over_max_message_bytes_ends_the_stream_with_resource_exhausted() -> None:
    limit = 64 * 1024
    registry = simple_registry()

    @registry.server_fn
    def grows() -> Iterator[str]:
        yield "small"
        yield "x" * (2 * limit)
        yield "never sent"

    with (
        run_in_thread(registry, limits=Limits(max_message_bytes=limit)) as running,
        running.client(timeout=PROMPTLY) as client,
    ):
        received: list[object] = []
        with pytest.raises(ResourceExhausted):
            drain(client.invoke("grows"), into=received)
        assert received == ["small"]
        assert client.call("ping") == "pong"


# --- Binding and lifecycle ---


async def test_port_zero_binds_a_real_port_reported_by_port_and_address() -> None:
    server = Server(simple_registry(), port=0)
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.port
    await server.start()
    try:
        assert server.port > 0
        assert server.address == f"127.0.0.1:{server.port}"
        with socket.create_connection(("127.0.0.1", server.port), timeout=PROMPTLY):
            pass
        async with AsyncClient(server.address, timeout=PROMPTLY) as client:
            assert await client.call("ping") == "pong"
    finally:
        await server.stop(0)


async def test_two_servers_on_port_zero_get_different_ports() -> None:
    first = Server(simple_registry(), port=0)
    second = Server(simple_registry(), port=0)
    await first.start()
    try:
        await second.start()
        try:
            assert first.port != second.port
        finally:
            await second.stop(0)
    finally:
        await first.stop(0)


async def test_starting_a_server_twice_raises() -> None:
    server = Server(simple_registry(), port=0)
    await server.start()
    try:
        port = server.port
        with pytest.raises(RuntimeError, match="already started"):
            await server.start()
        assert server.port == port
        async with AsyncClient(server.address, timeout=PROMPTLY) as client:
            assert await client.call("ping") == "pong"
    finally:
        await server.stop(0)
