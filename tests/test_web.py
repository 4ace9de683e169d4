"""The web port: the test app over Connect (JSON and binary) and gRPC-Web, called with the
Connect project's own Python client (connectrpc) over real HTTP connections to a real server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
import trustme
from connectrpc.client import ResponseMetadata
from connectrpc.code import Code
from connectrpc.compat import google_protobuf_binary_codec, google_protobuf_json_codec
from connectrpc.errors import ConnectError
from connectrpc.protocol import ProtocolType
from google.rpc import error_details_pb2
from pyqwest import Client as HTTPClient
from pyqwest import HTTPTransport, HTTPVersion

from grpc_serverfn import ClientTLS, Context, Identity, Limits, Registry, ServerTLS, bearer_auth
from grpc_serverfn._proto.serverfn.v1 import serverfn_pb2 as pb
from grpc_serverfn._proto.serverfn.v1.serverfn_connect import ServerFunctionsClient
from grpc_serverfn.observe import UNKNOWN_FUNCTION, CallRecord
from grpc_serverfn.testing import RunningServer, run_in_loop, run_in_thread
from tests import app
from tests.processes import PROMPTLY, ROOT, WEB_SERVING, run_cli, serving

INVOKE = "/serverfn.v1.ServerFunctions/Invoke"

# (protocol, codec): Connect JSON, Connect binary, gRPC-Web binary, gRPC-Web JSON.
WIRES = {
    "connect-json": (ProtocolType.CONNECT, google_protobuf_json_codec()),
    "connect-proto": (ProtocolType.CONNECT, google_protobuf_binary_codec()),
    "grpc-web-proto": (ProtocolType.GRPC_WEB, google_protobuf_binary_codec()),
    "grpc-web-json": (ProtocolType.GRPC_WEB, google_protobuf_json_codec()),
}


@pytest.fixture(scope="module")
def web_server() -> Iterator[RunningServer]:
    """The test app with a web port, served from a background thread for the module."""
    with run_in_thread(app.fns, web_port=0) as running:
        yield running


@pytest.fixture(scope="module")
def demo_server(demo: ModuleType) -> Iterator[RunningServer]:
    """examples/demo.py with a web port (docs/browsers.md's curl session calls it)."""
    with run_in_thread(demo.fns, web_port=0) as running:
        yield running


@pytest.fixture(params=sorted(WIRES))
def wire(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def client_for(url: str, wire: str = "connect-json") -> ServerFunctionsClient:
    protocol, codec = WIRES[wire]
    return ServerFunctionsClient(url, protocol=protocol, codec=codec)


def request(function: str, data: Any = None, **fields: Any) -> pb.InvokeRequest:
    message = pb.InvokeRequest(function=function, **fields)
    if data is not None:
        message.json = json.dumps(data)
    return message


async def collect(
    client: ServerFunctionsClient, message: pb.InvokeRequest, **options: Any
) -> tuple[list[pb.Chunk], ConnectError | None]:
    """Every chunk the call delivered, and the error it ended with (None: OK)."""
    chunks: list[pb.Chunk] = []
    try:
        async for chunk in client.invoke(message, **options):
            chunks.append(chunk)
    except ConnectError as error:
        return chunks, error
    return chunks, None


def values(chunks: list[pb.Chunk]) -> list[Any]:
    return [json.loads(chunk.json) for chunk in chunks]


def bad_request(error: ConnectError) -> error_details_pb2.BadRequest:
    [detail] = [d for d in error.details if d.type_name == "google.rpc.BadRequest"]
    return error_details_pb2.BadRequest.FromString(detail.message_bytes)


def wait_until(event: threading.Event, seconds: float = 10) -> None:
    assert event.wait(seconds), "the handler did not get there in time"


# --- calls -----------------------------------------------------------------------------------


async def test_chunks_arrive_in_order(web_server: RunningServer, wire: str) -> None:
    async with client_for(web_server.web_url, wire) as client:
        chunks, error = await collect(client, request("count_async", {"n": 5}))
    assert error is None
    assert values(chunks) == [0, 1, 2, 3, 4]
    assert [chunk.seq for chunk in chunks] == [0, 1, 2, 3, 4]


async def test_a_caller_that_opts_in_gets_chunks_coalesced(
    web_server: RunningServer, wire: str
) -> None:
    async with client_for(web_server.web_url, wire) as client:
        chunks, error = await collect(client, request("count_async", {"n": 300}, max_batch=64))
    assert error is None
    got = []
    for chunk in chunks:
        texts = chunk.batch.json if chunk.WhichOneof("payload") == "batch" else [chunk.json]
        assert chunk.seq == len(got)
        got += [json.loads(text) for text in texts]
    assert got == list(range(300))


async def test_a_plain_function_and_value_encoding(web_server: RunningServer, wire: str) -> None:
    async with client_for(web_server.web_url, wire) as client:
        chunks, error = await collect(
            client,
            pb.InvokeRequest(function="echo_async", json='{"a": [1, 2]}', accept=pb.ENCODING_VALUE),
        )
    assert error is None
    [chunk] = chunks
    assert chunk.WhichOneof("payload") == "value"
    assert chunk.value.struct_value["a"][1] == 2


async def test_an_error_after_chunks_keeps_the_chunks(web_server: RunningServer, wire: str) -> None:
    async with client_for(web_server.web_url, wire) as client:
        chunks, error = await collect(client, request("fail_after", {"n": 3}))
    assert values(chunks) == [0, 1, 2]
    assert error is not None
    assert error.code is Code.FAILED_PRECONDITION
    assert error.message == "the widget is not ready"


async def test_invalid_input_names_its_fields(web_server: RunningServer, wire: str) -> None:
    async with client_for(web_server.web_url, wire) as client:
        chunks, error = await collect(client, request("count_async", {"n": -1}))
        assert not chunks
        assert error is not None
        assert error.code is Code.INVALID_ARGUMENT
        assert [v.field for v in bad_request(error).field_violations] == ["n"]

        _, error = await collect(client, request("raise_invalid"))
    assert error is not None
    assert error.code is Code.INVALID_ARGUMENT
    assert error.message == "two fields are wrong"
    violations = bad_request(error).field_violations
    assert [(v.field, v.description) for v in violations] == [
        ("a", "must be set"),
        ("b.c", "too long"),
    ]


async def test_an_unexpected_error_is_internal_and_keeps_its_secret(
    web_server: RunningServer,
) -> None:
    async with client_for(web_server.web_url) as client:
        chunks, error = await collect(client, request("crash_after", {"n": 1}))
    assert values(chunks) == [0]
    assert error is not None
    assert error.code is Code.INTERNAL
    assert "hunter2" not in error.message


async def test_an_unknown_function_is_not_found(web_server: RunningServer, wire: str) -> None:
    async with client_for(web_server.web_url, wire) as client:
        chunks, error = await collect(client, request("no_such_function"))
    assert not chunks
    assert error is not None
    assert error.code is Code.NOT_FOUND
    assert "no_such_function" in error.message


async def test_list_functions(web_server: RunningServer, wire: str) -> None:
    async with client_for(web_server.web_url, wire) as client:
        listing = await client.list_functions(pb.ListFunctionsRequest())
    functions = {info.name: info for info in listing.functions}
    assert set(functions) == {function.name for function in app.fns}
    assert functions["resumable_ticks"].resumable
    assert functions["count_async"].input_schema["properties"]["n"]["type"] == "integer"


async def test_metadata_peer_and_trailers(web_server: RunningServer, wire: str) -> None:
    async with client_for(web_server.web_url, wire) as client:
        with ResponseMetadata() as response:
            chunks, error = await collect(
                client,
                request("context_info"),
                headers={"x-token": "secret-1", "x-tag": "a"},
            )
    assert error is None
    [info] = values(chunks)
    assert info["function"] == "context_info"
    assert info["token"] == "secret-1"
    assert info["all_tags"] == ["a"]
    assert info["peer"].startswith("ipv4:127.0.0.1:")
    assert info["time_remaining"] is None
    assert response.trailers["x-handled-by"] == "context_info"
    # A binary trailer travels base64-encoded, as gRPC metadata does over HTTP/1.1.
    assert response.trailers["x-checksum-bin"] in ("AAE", "AAE=")


# --- resumable streams -----------------------------------------------------------------------


async def test_a_resumable_call_announces_its_stream_and_a_resume_continues(
    web_server: RunningServer, wire: str
) -> None:
    async with client_for(web_server.web_url, wire) as client:
        with ResponseMetadata() as response:
            first: list[pb.Chunk] = []
            async with contextlib.aclosing(
                client.invoke(request("resumable_ticks", {"count": 6, "seconds": 0.02}))
            ) as stream:
                async for chunk in stream:
                    first.append(chunk)
                    if len(first) == 2:
                        break  # the connection goes; the stream's producer goes on
        stream_id = response.headers["serverfn-stream-id"]
        assert stream_id
        assert [value["tick"] for value in values(first)] == [0, 1]

        resume = pb.InvokeRequest(resume=pb.Resume(stream_id=stream_id, next_seq=2))
        with ResponseMetadata() as resumed:
            rest, error = await collect(client, resume)
    assert error is None
    assert resumed.headers["serverfn-stream-id"] == stream_id
    assert [chunk.seq for chunk in rest] == [2, 3, 4, 5]
    assert [value["tick"] for value in values(rest)] == [2, 3, 4, 5]


async def test_cancel_stream_stops_a_producer(web_server: RunningServer, wire: str) -> None:
    record = app.probe(f"web-cancel-stream-{wire}")
    ticks = {"probe": f"web-cancel-stream-{wire}", "count": 10_000, "seconds": 0.01}
    async with client_for(web_server.web_url, wire) as client:
        with ResponseMetadata() as response:
            async with contextlib.aclosing(client.invoke(request("resumable_ticks", ticks))) as s:
                async for _ in s:
                    break
        stream_id = response.headers["serverfn-stream-id"]
        cancelled = await client.cancel_stream(pb.CancelStreamRequest(stream_id=stream_id))
        assert cancelled.was_running
        await asyncio.to_thread(wait_until, record.cleaned_up)

        with pytest.raises(ConnectError) as raised:
            await client.cancel_stream(pb.CancelStreamRequest(stream_id="no-such-stream"))
    assert raised.value.code is Code.NOT_FOUND


# --- cancellation and deadlines --------------------------------------------------------------


async def test_leaving_the_stream_runs_the_handlers_finally_at_once(
    web_server: RunningServer, wire: str
) -> None:
    key = f"web-leave-{wire}"
    record = app.probe(key)
    async with client_for(web_server.web_url, wire) as client:
        stream = client.invoke(request("commit_or_rollback", {"probe": key, "chunks": 2}))
        async with contextlib.aclosing(stream):
            async for chunk in stream:
                if chunk.seq == 1:
                    break
        # Well before the handler's 30 s sleep ends: the closed response cancelled the call.
        await asyncio.to_thread(wait_until, record.cleaned_up, 5)
    assert record.cancelled_in_finally is True


async def test_a_closed_connection_cancels_the_call(web_server: RunningServer) -> None:
    """A browser tab closing: the TCP connection goes mid-stream, with no protocol goodbye."""
    key = "web-closed-connection"
    record = app.probe(key)
    body = json.dumps({"function": "wait_async", "json": json.dumps({"probe": key})}).encode()
    host, port = web_server.web_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST {INVOKE} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/connect+json\r\n"
        f"content-length: {len(body) + 5}\r\n\r\n".encode()
        + struct.pack(">BI", 0, len(body))
        + body
    )
    await writer.drain()
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    await asyncio.to_thread(wait_until, record.waiting)
    writer.close()
    await writer.wait_closed()
    await asyncio.to_thread(wait_until, record.cleaned_up, 5)
    assert record.cancelled_seen.is_set()


async def test_a_deadline_ends_the_call_and_its_handler(
    web_server: RunningServer, wire: str
) -> None:
    key = f"web-deadline-{wire}"
    record = app.probe(key)
    async with client_for(web_server.web_url, wire) as client:
        chunks, error = await collect(
            client, request("deadline_probe", {"probe": key}), timeout_ms=500
        )
    assert error is not None
    assert error.code is Code.DEADLINE_EXCEEDED
    remaining = values(chunks)
    assert len(remaining) == 2
    assert all(0 < seconds <= 0.5 for seconds in remaining)
    await asyncio.to_thread(wait_until, record.cleaned_up, 5)


# --- auth and observers ----------------------------------------------------------------------

TOKENS = {"t-ada": Identity("ada", frozenset({"admin"}))}
authed = Registry(middleware=[bearer_auth(TOKENS.get)])


@authed.server_fn
async def whoami(ctx: Context) -> str:
    assert ctx.identity is not None
    return ctx.identity.subject


async def test_bearer_auth_reads_the_authorization_header(wire: str) -> None:
    async with (
        run_in_loop(authed, web_port=0) as running,
        client_for(running.web_url, wire) as client,
    ):
        chunks, error = await collect(
            client, request("whoami"), headers={"authorization": "Bearer t-ada"}
        )
        assert error is None
        assert values(chunks) == ["ada"]

        _, error = await collect(client, request("whoami"))
        assert error is not None
        assert error.code is Code.UNAUTHENTICATED

        _, error = await collect(
            client, request("whoami"), headers={"authorization": "Bearer t-eve"}
        )
        assert error is not None
        assert error.code is Code.UNAUTHENTICATED


class Recorder:
    """Keeps the records of the calls that ended."""

    def __init__(self) -> None:
        self.ended: list[CallRecord] = []

    def call_started(self, record: CallRecord) -> None:
        return None

    def call_ended(self, record: CallRecord, token: None) -> None:
        self.ended.append(record)


async def test_observers_see_the_web_protocol_and_how_calls_ended() -> None:
    recorder = Recorder()
    async with run_in_loop(app.fns, web_port=0, observers=[recorder]) as running:
        for wire in ("connect-json", "grpc-web-proto"):
            async with client_for(running.web_url, wire) as client:
                await collect(client, request("count_async", {"n": 2}))
                # The deadline in the header only: the server's to enforce. With timeout_ms the
                # client's own timer, as short, may close the connection first (CANCELLED).
                deadline = (
                    {"grpc-timeout": "200m"}
                    if wire.startswith("grpc-web")
                    else {"connect-timeout-ms": "200"}
                )
                await collect(
                    client,
                    request("deadline_probe", {"probe": f"web-observed-{wire}"}),
                    headers=deadline,
                )
                await collect(client, request("no_such_function"))
    seen = [(r.protocol, r.function, r.code, r.sent.chunks) for r in recorder.ended]
    assert seen == [
        ("connect", "count_async", grpc.StatusCode.OK, 2),
        ("connect", "deadline_probe", grpc.StatusCode.DEADLINE_EXCEEDED, 2),
        ("connect", UNKNOWN_FUNCTION, grpc.StatusCode.NOT_FOUND, 0),
        ("grpc-web", "count_async", grpc.StatusCode.OK, 2),
        ("grpc-web", "deadline_probe", grpc.StatusCode.DEADLINE_EXCEEDED, 2),
        ("grpc-web", UNKNOWN_FUNCTION, grpc.StatusCode.NOT_FOUND, 0),
    ]


# --- lifecycle -------------------------------------------------------------------------------


async def test_both_ports_share_one_core_and_its_limits() -> None:
    """A call in flight on the gRPC port counts against the limit a web call then meets."""
    key = "web-shared-limit"
    record = app.probe(key)
    async with (
        run_in_loop(app.fns, web_port=0, limits=Limits(max_concurrent_calls=1)) as running,
        running.async_client() as grpc_client,
        client_for(running.web_url) as client,
    ):
        held = grpc_client.invoke("wait_async", {"probe": key})
        async for _ in held:
            break
        _, error = await collect(client, request("count_async", {"n": 1}))
        held.cancel()
        assert error is not None
        assert error.code is Code.RESOURCE_EXHAUSTED
        await asyncio.to_thread(wait_until, record.cleaned_up)
        for _ in range(100):  # the core counts the gRPC call out just after its cleanup
            chunks, error = await collect(client, request("count_async", {"n": 1}))
            if error is None or error.code is not Code.RESOURCE_EXHAUSTED:
                break
            await asyncio.sleep(0.02)
    assert error is None
    assert values(chunks) == [0]


async def test_stopping_drains_the_web_port_too() -> None:
    """In-flight web calls finish within the grace; calls arriving meanwhile are refused."""
    async with run_in_loop(app.fns, web_port=0, grace=5.0) as running:
        server = running.server
        async with client_for(running.web_url) as client:
            key = "web-drain"
            record = app.probe(key)
            call = asyncio.create_task(
                collect(client, request("wait_async", {"probe": key, "seconds": 0.5}))
            )
            await asyncio.to_thread(wait_until, record.waiting)
            stopping = asyncio.create_task(server.stop())
            await asyncio.sleep(0.05)  # the core is draining: new calls are refused
            _, refused = await collect(client, request("count_async", {"n": 1}))
            chunks, error = await call
            await stopping
    assert refused is not None
    assert refused.code is Code.UNAVAILABLE
    assert error is None
    assert values(chunks) == [0, -1]


async def test_past_the_grace_a_web_call_is_cancelled_and_cleaned_up() -> None:
    key = "web-past-grace"
    record = app.probe(key)
    async with (
        run_in_loop(app.fns, web_port=0, grace=0.3) as running,
        client_for(running.web_url) as client,
    ):
        call = asyncio.create_task(collect(client, request("wait_async", {"probe": key})))
        await asyncio.to_thread(wait_until, record.waiting)
        await running.server.stop()
        assert record.cleaned_up.is_set()
        chunks, error = await call
    assert values(chunks) == [0]
    assert error is not None


def test_the_web_port_is_none_without_one_and_refuses_mutual_tls() -> None:
    with run_in_thread(app.fns) as running:
        assert running.server.web_port is None
    from grpc_serverfn import ServerTLS
    from grpc_serverfn.server import Server

    with pytest.raises(ValueError, match="mutual TLS"):
        Server(app.fns, web_port=0, tls=ServerTLS(b"cert", b"key", client_ca=b"ca"))
    with pytest.raises(ValueError, match="web_port"):
        Server(app.fns, cors_origins=["https://app.example"])


# --- TLS and HTTP/2 ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_web_server(server_ca: trustme.CA) -> Iterator[RunningServer]:
    """The test app with its gRPC port and its web port over TLS, one certificate for both."""
    cert = server_ca.issue_cert("localhost", "127.0.0.1")
    chain = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
    tls = ServerTLS(chain, cert.private_key_pem.bytes())
    with run_in_thread(app.fns, web_port=0, tls=tls) as running:
        yield running


async def version_and_count(url: str, version: HTTPVersion, ca: bytes | None = None) -> Any:
    """The HTTP version a plain request to ``url`` was answered in, and count_async's chunks
    over Connect, both on one ``version``-only connection."""
    transport = HTTPTransport(http_version=version, tls_ca_cert=ca, max_connections_per_address=1)
    async with transport:
        http = HTTPClient(transport)
        listing = f"{url}/serverfn.v1.ServerFunctions/ListFunctions"
        async with http.stream("POST", listing, {"content-type": "application/json"}, b"{}") as r:
            assert r.status == 200
            answered = r.http_version
        protocol, codec = WIRES["connect-proto"]
        async with ServerFunctionsClient(
            url, http_client=http, protocol=protocol, codec=codec
        ) as client:
            chunks, error = await collect(client, request("count_async", {"n": 3}))
    assert error is None
    return answered, values(chunks)


async def test_tls_serves_the_web_port_over_http2_and_http1(
    tls_web_server: RunningServer, server_ca: trustme.CA
) -> None:
    url = tls_web_server.web_url
    assert url.startswith("https://127.0.0.1:")
    ca = server_ca.cert_pem.bytes()
    for version in (HTTPVersion.HTTP2, HTTPVersion.HTTP1):
        assert await version_and_count(url, version, ca) == (version, [0, 1, 2])
    # The gRPC port serves TLS with the same certificate.
    async with tls_web_server.async_client(tls=ClientTLS(ca=ca)) as grpc_client:
        assert [n async for n in grpc_client.invoke("count_async", {"n": 2})] == [0, 1]


@pytest.mark.parametrize(
    ("offered", "chosen"), [(["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1")]
)
def test_tls_offers_http2_and_http1_by_alpn(
    tls_web_server: RunningServer, server_ca: trustme.CA, offered: list[str], chosen: str
) -> None:
    context = ssl.create_default_context(cadata=server_ca.cert_pem.bytes().decode())
    context.set_alpn_protocols(offered)
    host, port = tls_web_server.web_url.removeprefix("https://").rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=PROMPTLY) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        assert tls.selected_alpn_protocol() == chosen


async def test_clear_text_takes_http2_with_prior_knowledge(web_server: RunningServer) -> None:
    for version in (HTTPVersion.HTTP2, HTTPVersion.HTTP1):
        assert await version_and_count(web_server.web_url, version) == (version, [0, 1, 2])


async def test_cors_lets_a_listed_origin_read_the_stream_id() -> None:
    origin = "https://app.example"
    async with run_in_loop(app.fns, web_port=0, cors_origins=[origin]) as running:
        host, port = running.web_url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"OPTIONS {INVOKE} HTTP/1.1\r\nhost: {host}\r\norigin: {origin}\r\n"
            "access-control-request-method: POST\r\n"
            "access-control-request-headers: content-type,connect-protocol-version,"
            "authorization\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        preflight = (await reader.read()).decode()
        writer.close()
        await writer.wait_closed()
        assert preflight.startswith("HTTP/1.1 200")
        assert f"access-control-allow-origin: {origin}" in preflight.lower()

        protocol, codec = WIRES["connect-json"]
        async with ServerFunctionsClient(running.web_url, protocol=protocol, codec=codec) as c:
            with ResponseMetadata() as response:
                await collect(
                    c, request("resumable_ticks", {"count": 1}), headers={"origin": origin}
                )
        exposed = response.headers["access-control-expose-headers"].lower()
        assert "serverfn-stream-id" in exposed
        assert "grpc-status-details-bin" in exposed


# --- static files (web_root) ----------------------------------------------------------------


async def http_request(
    url: str, target: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request with ``target`` sent exactly as given (no client tidies ``..``
    away): the status, the headers (lower-case names) and the body."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    lines = [f"{method} {target} HTTP/1.1", f"host: {host}", "connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in fields.items()}, body


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A built UI's directory, beside a secret it must never serve."""
    root = tmp_path / "dist"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>the app</title>")
    (root / "assets" / "app.js").write_text("console.log('app');")
    (tmp_path / "secret.txt").write_text("hunter2")
    (root / "outside").symlink_to(tmp_path)  # a link out of the root
    return root


async def test_a_web_root_serves_its_files_beside_the_functions(site: Path) -> None:
    origin = "https://app.example"
    async with run_in_loop(app.fns, web_port=0, web_root=site, cors_origins=[origin]) as running:
        url = running.web_url
        status, headers, body = await http_request(url, "/")
        assert (status, body) == (200, b"<!doctype html><title>the app</title>")
        assert headers["content-type"].startswith("text/html")
        status, headers, body = await http_request(url, "/index.html")
        assert status == 200
        status, headers, body = await http_request(url, "/assets/app.js")
        assert (status, body) == (200, b"console.log('app');")
        assert "javascript" in headers["content-type"]
        status, _, _ = await http_request(url, "/assets/missing.js")
        assert status == 404
        status, _, _ = await http_request(url, "/missing")
        assert status == 404
        status, _, _ = await http_request(url, "/", method="POST", headers={"content-length": "0"})
        assert status == 405
        # CORS covers the files too.
        _, headers, _ = await http_request(url, "/", headers={"origin": origin})
        assert headers["access-control-allow-origin"] == origin

        # The functions' paths are the functions', whatever the root holds.
        for wire in ("connect-json", "grpc-web-proto"):
            async with client_for(url, wire) as client:
                chunks, error = await collect(client, request("count_async", {"n": 3}))
                assert error is None
                assert values(chunks) == [0, 1, 2]
                listing = await client.list_functions(pb.ListFunctionsRequest())
                assert {info.name for info in listing.functions} == {f.name for f in app.fns}
        status, _, _ = await http_request(url, "/serverfn.v1.ServerFunctions/NoSuchMethod")
        assert status == 404
        # gRPC still has its own port.
        async with running.async_client() as grpc_client:
            assert await grpc_client.call("echo_async", "hi") == "hi"


@pytest.mark.parametrize(
    "target",
    [
        "/../secret.txt",
        "/assets/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/assets/..%2f..%2fsecret.txt",
        "/..%5csecret.txt",
        "/outside/secret.txt",
        "//secret.txt",
    ],
)
async def test_a_web_root_serves_nothing_outside_it(site: Path, target: str) -> None:
    async with run_in_loop(app.fns, web_port=0, web_root=site) as running:
        status, _, body = await http_request(running.web_url, target)
    assert b"hunter2" not in body
    assert status in (400, 404), (status, body)


def test_web_root_must_be_a_directory_for_a_web_port(tmp_path: Path) -> None:
    from grpc_serverfn.server import Server

    (tmp_path / "file.txt").write_text("")
    with pytest.raises(ValueError, match="web_root must be a directory that exists"):
        Server(app.fns, web_port=0, web_root=tmp_path / "missing")
    with pytest.raises(ValueError, match="web_root must be a directory that exists"):
        Server(app.fns, web_port=0, web_root=tmp_path / "file.txt")
    with pytest.raises(ValueError, match="web_root is for the web port"):
        Server(app.fns, web_root=tmp_path)


# --- the command line ------------------------------------------------------------------------


async def test_serve_web_port_serves_browsers_and_stops_on_sigterm() -> None:
    spec = "tests.app:fns"
    with serving(spec, "--port", "0", "--web-port", "0", "--cors-origin", "https://a.example") as s:
        web_url = await asyncio.to_thread(s.wait_web_serving)
        async with client_for(web_url) as client:
            chunks, error = await collect(client, request("count_async", {"n": 3}))
        assert error is None
        assert values(chunks) == [0, 1, 2]
        s.signal(signal.SIGTERM)
        assert await asyncio.to_thread(s.wait, PROMPTLY) == 0, s.log
    assert "Running on" not in s.log  # hypercorn's own line: the one above says it


async def test_serve_web_root_serves_the_files_and_the_functions(site: Path) -> None:
    with serving("tests.app:fns", "--port", "0", "--web-port", "0", "--web-root", str(site)) as s:
        line = await asyncio.to_thread(s.wait_for_line, WEB_SERVING)
        match = WEB_SERVING.search(line)
        assert match is not None
        assert f"and the files of {site} at /" in line
        status, _, body = await http_request(match.group(1), "/")
        assert (status, body) == (200, b"<!doctype html><title>the app</title>")
        async with client_for(match.group(1)) as client:
            chunks, error = await collect(client, request("count_async", {"n": 2}))
        assert (values(chunks), error) == ([0, 1], None)
        s.signal(signal.SIGTERM)
        assert await asyncio.to_thread(s.wait, PROMPTLY) == 0, s.log


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        (["--cors-origin", "https://a.example"], "--cors-origin is for the web port"),
        (["--web-port", "70000"], "expected a port number"),
        (["--web-root", "tests"], "--web-root is for the web port: add --web-port"),
        (["--web-port", "0", "--web-root", "no/such/dir"], "--web-root no/such/dir is not a"),
        (["--web-port", "0", "--web-root", "README.md"], "--web-root README.md is not a"),
        (
            # Files that are there (no certificates: the flags are refused before any is used).
            [
                "--web-port",
                "0",
                *(f"--tls-{flag}=README.md" for flag in ("cert", "key", "client-ca")),
            ],
            "--web-port does not do mutual TLS",
        ),
    ],
)
def test_serve_refuses_web_flags_it_cannot_honour(flags: list[str], complaint: str) -> None:
    result = run_cli("serve", "tests.app:fns", "--port", "0", *flags)
    assert result.returncode == 2, result.stderr
    assert complaint in result.stderr


def test_the_docs_curl_commands_work(demo_server: RunningServer) -> None:
    """docs/browsers.md's curl session for the web port, run as written against the demo."""
    for tool in ("curl", "xxd"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    page = (ROOT / "docs" / "browsers.md").read_text()
    section = page.split("## Browsers: the web port", 1)[1].split("\n## ", 1)[0]
    sessions = re.findall(r"```console\n(.*?)```", section, re.DOTALL)
    url = demo_server.web_url
    for session in sessions[1:]:  # the first installs and serves
        command, expected = _command_and_output(session)
        command = command.replace("http://127.0.0.1:8080", url)
        result = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=PROMPTLY, check=False
        )
        assert result.returncode == 0, result.stderr
        shown = expected.removesuffix("...\n").rstrip("\n")
        assert result.stdout.startswith(shown), f"{command}\n{result.stdout}"


def _command_and_output(session: str) -> tuple[str, str]:
    """A console session's commands (``$`` lines and their continuations) and what it shows."""
    commands: list[str] = []
    output: list[str] = []
    continued = False
    for line in session.splitlines(keepends=True):
        if line.startswith("$ ") or (continued and not output):
            commands.append(line.removeprefix("$ "))
            continued = line.rstrip().endswith(("\\", "|"))
        else:
            output.append(line)
    return "".join(commands), "".join(output)
