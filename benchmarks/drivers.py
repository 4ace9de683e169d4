"""The client side of each benchmark row: one way of calling one server.

Every driver does the same per-chunk work, kept minimal: receive the chunk, turn its JSON into
a Python value (the grpc-serverfn clients do that themselves; the others call ``orjson.loads``
on the ``json`` field) and count it. Each driver owns its own channel and TCP connection
(grpcio's global subchannel pool is turned off), made when the driver is.

For the chat scenario each asyncio driver also has ``chat``: one paced stream, every token
handed to a ``TokenSink`` (its position and due time) as it arrives, and nothing else done.

The sync ``Client`` rows (``ServerfnSyncDriver``) make their blocking calls from inside the
coroutine: no other task runs on that loop, so nothing waits on it, and every row is driven by
the same scenario code.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any, Protocol

import grpc
import grpc.aio
import orjson
from grpclib.client import Channel

from grpc_serverfn import AsyncClient, Client
from grpc_serverfn._proto.serverfn.v1 import serverfn_pb2, serverfn_pb2_grpc
from grpc_serverfn._wire import COALESCE_MAX_BATCH

from ._betterproto.bench.v1 import BenchStub as GrpclibBenchStub
from ._betterproto.bench.v1 import ChatReq as GrpclibChatReq
from ._betterproto.bench.v1 import Req as GrpclibReq
from ._proto.bench.v1 import bench_pb2, bench_pb2_grpc
from .servers import HOST

__all__ = [
    "CALL_TIMEOUT",
    "AsyncDriver",
    "CoalesceUnsupported",
    "Driver",
    "GrpcAioDriver",
    "GrpclibDriver",
    "IdleStream",
    "ServerfnAsyncDriver",
    "ServerfnStubDriver",
    "ServerfnSyncDriver",
    "TokenSink",
    "WebConnectDriver",
]

CALL_TIMEOUT = 600.0
"""The deadline of every call: nothing the benchmark does can hang for longer."""

_CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]  # one connection per driver

loads = orjson.loads


class CoalesceUnsupported(RuntimeError):
    """This grpc_serverfn's clients take no ``coalesce=`` argument (chunk coalescing is not in)."""


class TokenSink(Protocol):
    """Where a chat stream's tokens go, one call per token, as each arrives."""

    def add(self, seq: int, due_us: int) -> None:
        """Token ``seq`` (counting from 0), due at ``due_us`` (wall clock, µs), arrived now."""
        ...


class IdleStream(ABC):
    """A stream that has received its first chunk and is held open; ``close`` cancels it."""

    @abstractmethod
    async def close(self) -> None: ...


class Driver(ABC):
    """Calls one server in one way. Counts are checked by the caller."""

    @abstractmethod
    async def drain(self, count: int, size: int) -> int:
        """Stream ``count`` chunks of about ``size`` bytes; returns how many arrived."""

    @abstractmethod
    async def timed_call(self, count: int, size: int) -> tuple[float, float, int]:
        """One call: seconds to the first chunk, seconds to the end, and the chunks received."""

    async def open_idle(self) -> IdleStream:
        """Open an idle stream and wait for its first chunk."""
        raise NotImplementedError(f"{type(self).__name__} has no idle streams")

    async def chat(self, tokens: int, interval_us: int, sink: TokenSink) -> None:
        """One chat stream of ``tokens`` tokens ``interval_us`` apart, each handed to ``sink``."""
        raise NotImplementedError(f"{type(self).__name__} has no chat streams")

    @abstractmethod
    async def aclose(self) -> None:
        """Close the channel."""


class AsyncDriver(Driver, ABC):
    """A driver on an asyncio client, which can run many calls at once."""


class _JsonMessagesDriver(AsyncDriver, ABC):
    """A grpc.aio stub whose stream's messages carry one chunk's JSON in their ``json`` field."""

    _channel: grpc.aio.Channel

    @abstractmethod
    def _stream(self, count: int, size: int) -> Any:
        """The call that streams ``count`` chunks of about ``size`` bytes."""

    async def drain(self, count: int, size: int) -> int:
        received = 0
        async for message in self._stream(count, size):
            loads(message.json)
            received += 1
        return received

    async def timed_call(self, count: int, size: int) -> tuple[float, float, int]:
        start = time.perf_counter()
        messages = aiter(self._stream(count, size))
        loads((await anext(messages)).json)
        first = time.perf_counter()
        received = 1
        async for message in messages:
            loads(message.json)
            received += 1
        return first - start, time.perf_counter() - start, received

    async def aclose(self) -> None:
        await self._channel.close()


class GrpcAioDriver(_JsonMessagesDriver):
    """The baseline's client: the grpc.aio typed stub generated from bench.proto."""

    def __init__(self, address: str) -> None:
        self._channel = grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
        self._stub = bench_pb2_grpc.BenchStub(self._channel)  # type: ignore[no-untyped-call]

    def _stream(self, count: int, size: int) -> Any:
        return self._stub.Stream(bench_pb2.Req(count=count, size=size), timeout=CALL_TIMEOUT)

    async def chat(self, tokens: int, interval_us: int, sink: TokenSink) -> None:
        add = sink.add
        request = bench_pb2.ChatReq(tokens=tokens, interval_us=interval_us)
        async for token in self._stub.Chat(request, timeout=CALL_TIMEOUT):
            add(token.seq, token.due_us)

    async def open_idle(self) -> IdleStream:
        call = self._stub.Idle(bench_pb2.Req(size=64), timeout=CALL_TIMEOUT)
        loads((await call.read()).json)
        return _GrpcAioIdle(call)


class _GrpcAioIdle(IdleStream):
    def __init__(self, call: Any) -> None:
        self._call = call

    async def close(self) -> None:
        self._call.cancel()


def _serverfn_client(
    kind: type[Client] | type[AsyncClient], address: str, coalesce: bool
) -> tuple[Any, str | None]:
    """A grpc-serverfn client with ``coalesce=coalesce``; and a note when it had to do without.

    Until the clients take ``coalesce=``, a coalescing row cannot run (``CoalesceUnsupported``)
    and a non-coalescing one runs without the argument, which is what there is then.
    """
    arguments: dict[str, Any] = {"coalesce": coalesce}  # type-checks with or without it
    try:
        return kind(address, options=_CHANNEL_OPTIONS, **arguments), None
    except TypeError as error:
        if "coalesce" not in str(error):
            raise
        if coalesce:
            raise CoalesceUnsupported(
                f"{kind.__name__}(coalesce=True) is not supported by this grpc_serverfn ({error})"
            ) from None
        note = f"{kind.__name__} takes no coalesce= yet: ran without it (nothing coalesces)"
        return kind(address, options=_CHANNEL_OPTIONS), note


class ServerfnStubDriver(_JsonMessagesDriver):
    """grpc-serverfn seen from outside: the grpc.aio stub generated from ``protos/``, one
    chunk per message (no ``max_batch``), its JSON turned into a value as every row does."""

    def __init__(self, address: str, function: str) -> None:
        self._function = function
        self._channel = grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
        self._stub = serverfn_pb2_grpc.ServerFunctionsStub(self._channel)  # type: ignore[no-untyped-call]

    def _stream(self, count: int, size: int) -> Any:
        return self._invoke(self._function, {"count": count, "size": size})

    def _invoke(self, function: str, data: dict[str, Any]) -> Any:
        request = serverfn_pb2.InvokeRequest(function=function, json=orjson.dumps(data).decode())
        return self._stub.Invoke(request, timeout=CALL_TIMEOUT)

    async def chat(self, tokens: int, interval_us: int, sink: TokenSink) -> None:
        add = sink.add
        async for message in self._invoke("chat", {"tokens": tokens, "interval_us": interval_us}):
            token = loads(message.json)
            add(token["i"], token["due"])


class ServerfnAsyncDriver(AsyncDriver):
    """grpc-serverfn's ``AsyncClient`` calling one of the app's functions."""

    def __init__(self, address: str, function: str, *, coalesce: bool) -> None:
        self._function = function
        self._client, self.note = _serverfn_client(AsyncClient, address, coalesce)

    async def drain(self, count: int, size: int) -> int:
        received = 0
        stream = self._client.invoke(
            self._function, {"count": count, "size": size}, timeout=CALL_TIMEOUT
        )
        async for _chunk in stream:
            received += 1
        return received

    async def timed_call(self, count: int, size: int) -> tuple[float, float, int]:
        start = time.perf_counter()
        stream = self._client.invoke(
            self._function, {"count": count, "size": size}, timeout=CALL_TIMEOUT
        )
        await anext(stream)
        first = time.perf_counter()
        received = 1
        async for _chunk in stream:
            received += 1
        return first - start, time.perf_counter() - start, received

    async def open_idle(self) -> IdleStream:
        stream = self._client.invoke("idle", timeout=CALL_TIMEOUT)
        await anext(stream)
        return _ServerfnIdle(stream)

    async def chat(self, tokens: int, interval_us: int, sink: TokenSink) -> None:
        add = sink.add
        request = {"tokens": tokens, "interval_us": interval_us}
        async for token in self._client.invoke("chat", request, timeout=CALL_TIMEOUT):
            add(token["i"], token["due"])

    async def aclose(self) -> None:
        await self._client.aclose()


class _ServerfnIdle(IdleStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def close(self) -> None:
        self._stream.cancel()


class ServerfnSyncDriver(Driver):
    """grpc-serverfn's blocking ``Client``, called from inside the coroutine (see the module)."""

    def __init__(self, address: str, function: str, *, coalesce: bool) -> None:
        self._function = function
        self._client, self.note = _serverfn_client(Client, address, coalesce)

    async def drain(self, count: int, size: int) -> int:
        received = 0
        stream = self._client.invoke(
            self._function, {"count": count, "size": size}, timeout=CALL_TIMEOUT
        )
        for _chunk in stream:
            received += 1
        return received

    async def timed_call(self, count: int, size: int) -> tuple[float, float, int]:
        start = time.perf_counter()
        stream = self._client.invoke(
            self._function, {"count": count, "size": size}, timeout=CALL_TIMEOUT
        )
        next(stream)
        first = time.perf_counter()
        received = 1
        for _chunk in stream:
            received += 1
        return first - start, time.perf_counter() - start, received

    async def aclose(self) -> None:
        self._client.close()


class GrpclibDriver(AsyncDriver):
    """grpclib's client with betterproto's stub, for the grpclib server."""

    def __init__(self, port: int) -> None:
        self._channel = Channel(HOST, port)
        self._stub = GrpclibBenchStub(self._channel)

    async def drain(self, count: int, size: int) -> int:
        received = 0
        async for message in self._stub.stream(
            GrpclibReq(count=count, size=size), timeout=CALL_TIMEOUT
        ):
            loads(message.json)
            received += 1
        return received

    async def timed_call(self, count: int, size: int) -> tuple[float, float, int]:
        start = time.perf_counter()
        messages = self._stub.stream(GrpclibReq(count=count, size=size), timeout=CALL_TIMEOUT)
        loads((await anext(messages)).json)
        first = time.perf_counter()
        received = 1
        async for message in messages:
            loads(message.json)
            received += 1
        return first - start, time.perf_counter() - start, received

    async def open_idle(self) -> IdleStream:
        messages = self._stub.idle(GrpclibReq(size=64), timeout=CALL_TIMEOUT)
        loads((await anext(messages)).json)
        return _GrpclibIdle(messages)

    async def chat(self, tokens: int, interval_us: int, sink: TokenSink) -> None:
        add = sink.add
        request = GrpclibChatReq(tokens=tokens, interval_us=interval_us)
        async for token in self._stub.chat(request, timeout=CALL_TIMEOUT):
            add(token.seq, token.due_us)

    async def aclose(self) -> None:
        self._channel.close()


class _GrpclibIdle(IdleStream):
    def __init__(self, messages: Any) -> None:
        self._messages = messages

    async def close(self) -> None:
        await self._messages.aclose()


class WebConnectDriver(AsyncDriver):
    """The Connect project's Python client (connectrpc, binary Connect) on the web port, over
    one HTTP/2 connection in clear text (prior knowledge), as pyqwest (Rust's hyper) makes it:
    what a browser's page does over TLS. ``coalesce`` asks for coalesced chunks (``max_batch``)
    as grpc-serverfn's own clients do."""

    def __init__(self, url: str, function: str, *, coalesce: bool) -> None:
        from connectrpc.compat import google_protobuf_binary_codec
        from connectrpc.protocol import ProtocolType
        from pyqwest import Client as HTTPClient
        from pyqwest import HTTPTransport, HTTPVersion

        from grpc_serverfn._proto.serverfn.v1.serverfn_connect import ServerFunctionsClient

        self._transport = HTTPTransport(
            http_version=HTTPVersion.HTTP2, max_connections_per_address=1
        )
        self._client = ServerFunctionsClient(
            url,
            http_client=HTTPClient(self._transport),
            protocol=ProtocolType.CONNECT,
            codec=google_protobuf_binary_codec(),
        )
        self._function = function
        self._max_batch = COALESCE_MAX_BATCH if coalesce else 0

    def _request(self, function: str, arguments: dict[str, int]) -> serverfn_pb2.InvokeRequest:
        return serverfn_pb2.InvokeRequest(
            function=function, json=orjson.dumps(arguments).decode(), max_batch=self._max_batch
        )

    def _stream(self, count: int, size: int) -> Any:
        request = self._request(self._function, {"count": count, "size": size})
        return self._client.invoke(request, timeout_ms=int(CALL_TIMEOUT * 1000))

    async def chat(self, tokens: int, interval_us: int, sink: TokenSink) -> None:
        add = sink.add
        request = self._request("chat", {"tokens": tokens, "interval_us": interval_us})
        async for message in self._client.invoke(request, timeout_ms=int(CALL_TIMEOUT * 1000)):
            if message.WhichOneof("payload") == "batch":
                for text in message.batch.json:
                    token = loads(text)
                    add(token["i"], token["due"])
            else:
                token = loads(message.json)
                add(token["i"], token["due"])

    @staticmethod
    def _values(message: serverfn_pb2.Chunk) -> int:
        """Decode a message's chunks as the grpc-serverfn clients do; how many it held."""
        if message.WhichOneof("payload") == "batch":
            for text in message.batch.json:
                loads(text)
            return len(message.batch.json)
        loads(message.json)
        return 1

    async def drain(self, count: int, size: int) -> int:
        received = 0
        async for message in self._stream(count, size):
            received += self._values(message)
        return received

    async def timed_call(self, count: int, size: int) -> tuple[float, float, int]:
        start = time.perf_counter()
        messages = aiter(self._stream(count, size))
        received = self._values(await anext(messages))
        first = time.perf_counter()
        async for message in messages:
            received += self._values(message)
        return first - start, time.perf_counter() - start, received

    async def aclose(self) -> None:
        await self._client.close()
        await self._transport.aclose()
