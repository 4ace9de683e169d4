"""The web transport: ``serverfn.v1.ServerFunctions`` for browsers, over Connect (JSON or binary)
and gRPC-Web, a thin shell over the call core.

The Connect project's own runtime (``connectrpc``) does every byte of the protocols: framing,
codecs, compression, timeouts, errors and trailers; its ASGI application, generated from the
proto into ``_proto/serverfn/v1/serverfn_connect.py``, runs under hypercorn in the gRPC server's
own event loop. What is ours is the hand-over, as in ``_grpc.py``: each request is parsed once
(``_messages.invocation_of``) and the call handed to ``CallCore`` with a ``WebTransport``::

    HTTP request ─► hypercorn ─► connectrpc (Connect / gRPC-Web) ─► _Service.invoke
                                                                       │ a task of its own:
                                                                       ▼
                                      CallCore.invoke(invocation, WebTransport)
                                        send ─► each Chunk handed to the streaming response
                                        finish ─► OK with trailers, or a ConnectError

connectrpc pulls a server stream's messages from an async iterator while the core pushes them,
so the core runs in a task of its own and each ``send`` waits until the response has taken its
message. When the response ends early (the connection closed, the deadline passed, the server
stopped), the core's task is cancelled and waited for: the handler's cleanup runs at once.

With a web root (``serve --web-root``), every other path of the port serves that directory's
files (starlette's ``StaticFiles``), so one process serves a built UI and the functions it calls.

The web port speaks HTTP/1.1 and HTTP/2: over TLS (the gRPC port's certificate and key) ALPN
offers both, and in clear text hypercorn takes HTTP/2 with prior knowledge (h2c) as well. Its
HTTP/2 is tuned to hold 1,000 concurrent streams on one connection (``_config``, ``_H2Protocol``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import logging
import os
import socket
import ssl
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import hypercorn.protocol
from connectrpc.code import Code
from connectrpc.errors import ConnectError, ErrorDetail
from connectrpc.request import Headers, RequestContext
from google.rpc import status_pb2
from hypercorn.asyncio import serve
from hypercorn.config import Config
from hypercorn.protocol.h2 import H2Protocol
from priority.priority import PriorityTree
from protobuf.wkt import Any as AnyDetail

from ._call import CallCore
from ._messages import function_list, invocation_of
from ._proto.serverfn.v1 import serverfn_pb2
from ._proto.serverfn.v1.serverfn_connect import ServerFunctionsASGIApplication
from ._transport import CallEnded, Ending, Invocation, Send
from ._wire import GRPC_DETAILS_METADATA_KEY, STREAM_ID_METADATA_KEY
from .context import Metadata, MetadataValue

__all__ = ["H2_MAX_CONCURRENT_STREAMS", "WebServer", "WebTransport", "asgi_app"]

logger = logging.getLogger("grpc_serverfn.server")
# hypercorn's own log lines; Server logs where the web port serves (hypercorn's "Running on"
# line would say it again, with a hint about CTRL + C meant for hypercorn's own command).
hypercorn_logger = logging.getLogger("grpc_serverfn.web.hypercorn")
hypercorn_logger.addFilter(lambda record: not str(record.msg).startswith("Running on "))

# grpc's codes as Connect names them (the same numbers, one spelling apart).
_CODES = {
    status: Code.CANCELED if status is grpc.StatusCode.CANCELLED else Code[status.name]
    for status in grpc.StatusCode
    if status is not grpc.StatusCode.OK
}

# Headers that belong to HTTP or to the protocol, not to the call's metadata.
_TRANSPORT_HEADERS = frozenset(
    {
        "accept-encoding",
        "connect-accept-encoding",
        "connect-content-encoding",
        "connect-protocol-version",
        "connect-timeout-ms",
        "connection",
        "content-encoding",
        "content-length",
        "content-type",
        "grpc-accept-encoding",
        "grpc-encoding",
        "grpc-timeout",
        "host",
        "keep-alive",
        "te",
        "transfer-encoding",
        "upgrade",
        "x-grpc-web",
    }
)

# What a browser on another origin may send and read (serve --cors-origin).
CORS_REQUEST_HEADERS = (
    "authorization",
    "connect-protocol-version",
    "connect-timeout-ms",
    "content-type",
    "grpc-timeout",
    "x-grpc-web",
    "x-user-agent",
)
CORS_RESPONSE_HEADERS = (
    "grpc-message",
    "grpc-status",
    GRPC_DETAILS_METADATA_KEY,
    "connect-content-encoding",
    "connect-accept-encoding",
    STREAM_ID_METADATA_KEY,
)


# Streams one HTTP/2 connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS; a client
# queues the rest). hypercorn's default, 100, would make a page's 101st open stream wait; each
# open stream holds at most two frames of unsent data (hypercorn's StreamBuffer, 32 KiB).
H2_MAX_CONCURRENT_STREAMS = 1_000


class _H2Protocol(H2Protocol):
    """hypercorn's HTTP/2 with room in its send scheduler for every stream it lets a client open.

    hypercorn schedules its sends with a ``priority.PriorityTree`` made with that package's
    default cap: 1,000 streams, the tree's root among them, so 999. A stream is in the tree from
    its request until its response's last frame is sent (and, with trailers, until the sending
    task next visits it), so a client at 1,000 open streams, or one that opens a new stream the
    moment the last one ended, gets ``TooManyStreamsError`` from the tree; hypercorn does not
    catch it, and the connection hangs with all its streams (tried: 1,000 streams of 200 chunks
    on one connection never got past their first frames). Twice the streams allowed, plus the
    root, leaves room for those awaiting their removal.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        streams = self.config.h2_max_concurrent_streams
        self.priority = PriorityTree(maximum_streams=2 * streams + 1)


# hypercorn.protocol.ProtocolWrapper makes its HTTP/2 protocol (for ALPN "h2", h2c prior
# knowledge and h2c upgrade) by this module-level name; hypercorn is pinned (==0.18.0).
hypercorn.protocol.H2Protocol = _H2Protocol  # type: ignore[attr-defined]


def _config(tls: ssl.SSLContext | None) -> Config:
    """hypercorn's settings for the web port, each changed from its default for the reason given."""
    config = _WebConfig(tls)
    config.h2_max_concurrent_streams = H2_MAX_CONCURRENT_STREAMS
    # hypercorn ends a connection after this many requests (HTTP/2: a GOAWAY after the 1,001st
    # stream by default); h2 then fails the frames still arriving for streams in flight and
    # hypercorn closes the connection under them (tried: 1-101 of each round's 1,000 streams
    # failed after the first round). A browser's page keeps one connection per origin for as
    # long as it is open: no cap.
    config.keep_alive_max_requests = sys.maxsize
    # An idle connection (no stream open) is closed after this long; hypercorn's 5 s would make
    # a page calling every few seconds reconnect (a TLS handshake each time), and a request sent
    # as the server closes the connection can fail. A busy connection is never closed by it.
    config.keep_alive_timeout = 75.0
    config.errorlog = hypercorn_logger
    config.accesslog = None
    config.include_server_header = False
    return config


class _WebConfig(Config):
    """hypercorn's Config with TLS from an ``ssl.SSLContext`` made here (hypercorn's own reads
    the certificate and key from files; ours come as bytes)."""

    def __init__(self, tls: ssl.SSLContext | None) -> None:
        super().__init__()
        self._tls = tls

    @property
    def ssl_enabled(self) -> bool:
        return self._tls is not None

    def create_ssl_context(self) -> ssl.SSLContext | None:
        return self._tls


def server_ssl_context(certificate_chain: bytes, private_key: bytes) -> ssl.SSLContext:
    """A TLS context for the web port: what hypercorn would make from files (TLS 1.2 or later,
    no compression, AEAD ciphers), offering HTTP/2 and HTTP/1.1 by ALPN."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.set_ciphers("ECDHE+AESGCM")
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 9113 section 9.2
    context.options |= ssl.OP_NO_COMPRESSION  # RFC 9113 section 9.2.1
    context.set_alpn_protocols(["h2", "http/1.1"])
    # ssl loads a certificate chain only from files: a private directory, gone on return.
    with tempfile.TemporaryDirectory(prefix="serverfn-tls-") as directory:
        chain, key = os.path.join(directory, "chain.pem"), os.path.join(directory, "key.pem")
        for path, pem in ((chain, certificate_chain), (key, private_key)):
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                f.write(pem)
        context.load_cert_chain(chain, key)
    return context


class WebTransport:
    """The core's Transport over one web call: a hand-over from the core's task, which pushes
    messages, to the streaming response, which pulls them."""

    __slots__ = ("_ctx", "_pending", "_task", "_wake", "ending", "gone", "send")

    def __init__(self, ctx: RequestContext[Any, Any]) -> None:
        self._ctx = ctx
        self._pending: collections.deque[tuple[serverfn_pb2.Chunk, asyncio.Future[None]]] = (
            collections.deque()
        )
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.ending: Ending | None = None
        self.gone = False
        self.send: Send = self._send

    # --- the core's side -----------------------------------------------------------------

    async def _send(self, message: serverfn_pb2.Chunk) -> None:
        if self.gone:
            raise CallEnded
        taken = asyncio.get_running_loop().create_future()
        self._pending.append((message, taken))
        self._wake.set()
        await taken

    async def send_headers(self, headers: Sequence[tuple[str, str]]) -> None:
        # connectrpc sends the response headers with the first message (or the end).
        response_headers = self._ctx.response_headers
        for key, value in headers:
            response_headers.add(key, value)

    async def finish(self, ending: Ending) -> None:
        self.ending = ending
        self._wake.set()

    def caller_gone(self) -> bool:
        return self.gone

    # --- the response's side -------------------------------------------------------------

    def run(self, call: asyncio.Task[None]) -> None:
        """Read the messages of ``call``, the core's task serving this call."""
        self._task = call
        call.add_done_callback(lambda _: self._wake.set())

    async def next_message(self) -> serverfn_pb2.Chunk | None:
        """The next message the core sent; None once the call is over."""
        pending, task = self._pending, self._task
        assert task is not None
        while not pending:
            if self.ending is not None or task.done():
                return None
            self._wake.clear()
            await self._wake.wait()
        message, taken = pending.popleft()
        if not taken.done():
            taken.set_result(None)
        return message

    def end(self) -> None:
        """End the response as the call ended: its trailers; an error status raised as the
        ConnectError connectrpc sends."""
        ending = self.ending
        if ending is None:
            task = self._task
            assert task is not None
            assert task.done()
            if not task.cancelled() and (error := task.exception()) is not None:
                logger.error("the web transport's call failed", exc_info=error)
                raise ConnectError(Code.INTERNAL, "internal error")
            raise ConnectError(Code.CANCELED, "the call was cancelled")
        _end_response(self._ctx, ending)

    async def close(self) -> None:
        """The response is over: refuse further sends, and end the core's task (cancelled,
        unless the call already ended) so that the handler's cleanup has run on return."""
        self.gone = True
        while self._pending:
            _, taken = self._pending.popleft()
            if not taken.done():
                taken.set_exception(CallEnded())
        task = self._task
        if task is None or task.done():
            return
        if self.ending is None:
            task.cancel()
        await asyncio.wait((task,))


class _Service:
    """The three RPCs as connectrpc calls them, each a parse and a hand-over to the core."""

    def __init__(self, core: CallCore) -> None:
        self._core = core
        self._function_list = function_list(core.registry)

    async def invoke(
        self,
        request: serverfn_pb2.InvokeRequest,
        ctx: RequestContext[serverfn_pb2.InvokeRequest, serverfn_pb2.Chunk],
    ) -> AsyncIterator[serverfn_pb2.Chunk]:
        transport = WebTransport(ctx)
        transport.run(asyncio.create_task(self._serve(request, ctx, transport)))
        try:
            while (message := await transport.next_message()) is not None:
                yield message
            transport.end()
        finally:
            await transport.close()

    async def _serve(
        self,
        request: serverfn_pb2.InvokeRequest,
        ctx: RequestContext[Any, Any],
        transport: WebTransport,
    ) -> None:
        # Parsed here, in the call's own task, so that the time remaining is read as late as
        # possible: the handler's deadline then falls no later than connectrpc's.
        invocation = invocation_of(
            request, _metadata(ctx.request_headers), _peer(ctx), _seconds_left(ctx), None,
            _protocol(ctx.request_headers),
        )  # fmt: skip
        await self._core.invoke(invocation, transport)

    async def list_functions(
        self,
        request: serverfn_pb2.ListFunctionsRequest,
        ctx: RequestContext[serverfn_pb2.ListFunctionsRequest, serverfn_pb2.ListFunctionsResponse],
    ) -> serverfn_pb2.ListFunctionsResponse:
        return self._function_list

    async def cancel_stream(
        self,
        request: serverfn_pb2.CancelStreamRequest,
        ctx: RequestContext[serverfn_pb2.CancelStreamRequest, serverfn_pb2.CancelStreamResponse],
    ) -> serverfn_pb2.CancelStreamResponse:
        invocation = Invocation(
            "",
            metadata=_metadata(ctx.request_headers),
            peer=_peer(ctx),
            time_remaining=_seconds_left(ctx),
            protocol=_protocol(ctx.request_headers),
        )
        result = await self._core.cancel_stream(request.stream_id, invocation)
        if isinstance(result, Ending):
            _end_response(ctx, result)
            return serverfn_pb2.CancelStreamResponse()
        return serverfn_pb2.CancelStreamResponse(was_running=result)


def _end_response(ctx: RequestContext[Any, Any], ending: Ending) -> None:
    """End a response as the core ended its call: the trailers, and an error status raised
    as the ConnectError connectrpc sends."""
    details = _add_trailers(ctx.response_trailers, ending.trailers)
    if ending.code is not grpc.StatusCode.OK:
        raise ConnectError(_CODES[ending.code], ending.message, details)


def asgi_app(
    core: CallCore,
    *,
    read_max_bytes: int,
    cors_origins: Sequence[str] = (),
    web_root: Path | None = None,
) -> Any:
    """The ASGI application serving ``core``'s calls over Connect and gRPC-Web; with
    ``web_root``, the files of that directory on every other path; with ``cors_origins``,
    wrapped in starlette's CORSMiddleware for browsers on those origins."""
    rpc = ServerFunctionsASGIApplication(_Service(core), read_max_bytes=read_max_bytes)
    app: Any = rpc if web_root is None else _beside_files(rpc, web_root)
    if cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app = CORSMiddleware(
            app,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=list(CORS_REQUEST_HEADERS),
            expose_headers=list(CORS_RESPONSE_HEADERS),
            max_age=7200,
        )
    return app


def _beside_files(rpc: ServerFunctionsASGIApplication, web_root: Path) -> Any:
    """``rpc`` on the service's own paths (``/serverfn.v1.ServerFunctions/...``), the files of
    ``web_root`` on all others: ``/`` is its ``index.html``, a missing file 404 (or the root's
    ``404.html``), and no path reaches outside it (``..`` and symlinks out are refused)."""
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    # In a Starlette application, whose exception middleware turns StaticFiles' HTTPException
    # (404, 405) into a response: on its own, StaticFiles would end such requests with a 500.
    files = Starlette(routes=[Mount("/", app=StaticFiles(directory=web_root, html=True))])
    prefix = f"{rpc.path}/"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        # lifespan goes to connectrpc, which resolves its endpoints there.
        if scope["type"] != "http" or scope["path"].startswith(prefix):
            await rpc(scope, receive, send)
        else:
            await files(scope, receive, send)

    return app


class WebServer:
    """hypercorn serving the web transport on its own port, in the running event loop; over
    TLS with ``tls``.

    With ``reuse_port``, its socket joins others on the same port (``SO_REUSEPORT``): the
    worker processes of ``serve --workers`` share the web port as they share the gRPC port.
    """

    def __init__(
        self,
        core: CallCore,
        *,
        host: str,
        port: int,
        read_max_bytes: int,
        cors_origins: Sequence[str] = (),
        web_root: Path | None = None,
        reuse_port: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._app = asgi_app(
            core, read_max_bytes=read_max_bytes, cors_origins=cors_origins, web_root=web_root
        )
        self._host = host
        self._reuse_port = reuse_port
        self._requested_port = port
        self._stopping = asyncio.Event()
        self._config = _config(tls)
        self._task: asyncio.Task[None] | None = None
        self.port: int | None = None

    async def start(self) -> int:
        """Bind and listen (connections wait in the backlog until hypercorn takes them), start
        serving; the port bound."""
        listener = _listen(self._host, self._requested_port, reuse_port=self._reuse_port)
        self.port = listener.getsockname()[1]
        config = self._config
        config.bind = [f"fd://{listener.detach()}"]  # hypercorn owns the socket from here
        self._task = asyncio.create_task(
            serve(self._app, config, shutdown_trigger=self._stopping.wait, mode="asgi")
        )
        self._task.add_done_callback(_report_failure)
        return self.port

    async def stop(self, grace: float) -> None:
        """Stop taking connections; let open requests finish within ``grace`` seconds, then
        cancel the rest (their calls' cleanup runs)."""
        task = self._task
        if task is None:
            return
        self._config.graceful_timeout = grace
        self._stopping.set()
        with contextlib.suppress(Exception):  # reported by _report_failure
            await task


def _listen(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        listener = socket.socket(family, kind, proto)
    except OSError as error:
        raise OSError(f"cannot listen on {host}:{port} (web): {error}") from None
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(address)
        listener.listen(1024)
    except OSError:
        listener.close()
        raise OSError(
            f"cannot listen on {host}:{port} (web): the address is in use or not available"
        ) from None
    return listener


def _report_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        logger.error("the web port stopped serving", exc_info=error)


def _metadata(headers: Headers) -> Metadata:
    """The call's metadata: the request headers but HTTP's and the protocol's own, ``-bin``
    values decoded from base64 to bytes (as gRPC gives them)."""
    items: list[tuple[str, MetadataValue]] = []
    for key, value in headers.allitems():
        if key in _TRANSPORT_HEADERS:
            continue
        if key.endswith("-bin"):
            try:
                items.append((key, base64.b64decode(value + "=" * (-len(value) % 4))))
            except (binascii.Error, ValueError):
                continue  # not base64: no value a handler could trust
        else:
            items.append((key, value))
    return Metadata(items)


def _peer(ctx: RequestContext[Any, Any]) -> str:
    """The caller's address as gRPC writes it (``ipv4:127.0.0.1:53124``)."""
    address = ctx.client_address
    if not address:
        return ""
    host, _, port = address.rpartition(":")
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


def _seconds_left(ctx: RequestContext[Any, Any]) -> float | None:
    milliseconds = ctx.timeout_ms
    return None if milliseconds is None else max(0.0, milliseconds / 1000)


def _protocol(headers: Headers) -> str:
    content_type = headers.get("content-type", "")
    if content_type.startswith("application/grpc-web"):
        return "grpc-web"
    if content_type.startswith("application/grpc"):
        return "grpc"
    return "connect"


def _add_trailers(
    trailers: Headers, sent: Sequence[tuple[str, MetadataValue]]
) -> list[ErrorDetail]:
    """Put the call's trailers in the response's (``-bin`` values in base64); the details of
    its ``google.rpc.Status``, which connectrpc sends its own way per protocol."""
    details: list[ErrorDetail] = []
    for key, value in sent:
        if key == GRPC_DETAILS_METADATA_KEY and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            details = [
                ErrorDetail(AnyDetail(type_url=detail.type_url, value=detail.value))
                for detail in status.details
            ]
        elif isinstance(value, bytes):
            trailers.add(key, base64.b64encode(value).decode().rstrip("="))
        else:
            trailers.add(key, value)
    return details
