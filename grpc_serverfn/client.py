"""``Client`` (blocking, grpcio's sync channel) and ``AsyncClient`` (grpc.aio): thin I/O shells
over ``_client_core``, which does everything else.

::

    with Client("localhost:50051") as client:
        for update in client.invoke("stream_data"):
            print(update["progress"])

    async with AsyncClient("localhost:50051") as client:
        async for chunk in client.invoke("stream_chat", {"message": "hi"}):
            print(chunk["text"], end="")

Leaving the loop early, or the ``with`` block of a stream, cancels the call. A call that ends
with an error raises a ``ServerFnError`` subclass, after every chunk received before it.
``tls=ClientTLS(ca=..., certificate_chain=..., private_key=...)`` connects over TLS (mutual TLS
with a client certificate).
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Any, NoReturn

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ._client_core import (
    BaseClient,
    Batch,
    ErrorMapper,
    FunctionInfo,
    MetadataLike,
    decode_chunk,
    error_from_rpc_error,
    function_infos,
    health_status,
    no_chunk,
    too_many_chunks,
)
from ._proto.serverfn.v1 import serverfn_pb2, serverfn_pb2_grpc

__all__ = ["AsyncChunkStream", "AsyncClient", "ChunkStream", "Client"]


class ChunkStream(Iterator[Any]):
    """The chunks of one call, decoded; iterate it, and cancel it or leave its ``with`` early.

    Dropping the stream (breaking out of ``for client.invoke(...)``) cancels the call.
    """

    __slots__ = ("_call", "_error", "_pending")

    def __init__(self, call: Any, error: ErrorMapper = error_from_rpc_error) -> None:
        self._call = call
        self._error = error
        self._pending: collections.deque[Any] | None = None  # the rest of a coalesced batch

    def __next__(self) -> Any:
        # The per-chunk path: no generator layer, batches unpacked in place.
        pending = self._pending
        if pending:
            return pending.popleft()
        try:
            message = next(self._call)
        except grpc.RpcError as error:
            raise self._error(error) from None
        value = decode_chunk(message)
        if type(value) is Batch:
            self._pending = pending = collections.deque(value)
            return pending.popleft()
        return value

    def __iter__(self) -> ChunkStream:
        return self

    def cancel(self) -> None:
        """Cancel the call (no effect once it has ended)."""
        self._call.cancel()

    def initial_metadata(self) -> Any:
        """The server's initial metadata (waits for it)."""
        return self._call.initial_metadata()

    def trailing_metadata(self) -> Any:
        """The server's trailing metadata (waits for the call to end)."""
        return self._call.trailing_metadata()

    def __enter__(self) -> ChunkStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._call.cancel()

    def __del__(self) -> None:
        _cancel_if_running(self)

    def __aiter__(self) -> NoReturn:
        raise TypeError("Client streams are iterated with 'for'; use AsyncClient for 'async for'")


class AsyncChunkStream(AsyncIterator[Any]):
    """The chunks of one call on ``AsyncClient``; ``async for`` it, or ``async with`` it.

    Dropping the stream (breaking out of ``async for``) cancels the call.
    """

    __slots__ = ("_call", "_error", "_messages", "_pending")

    def __init__(self, call: Any, error: ErrorMapper = error_from_rpc_error) -> None:
        self._call = call
        self._error = error
        self._messages = call.__aiter__()
        self._pending: collections.deque[Any] | None = None

    def __aiter__(self) -> AsyncChunkStream:
        return self

    async def __anext__(self) -> Any:
        pending = self._pending
        if pending:
            return pending.popleft()
        try:
            message = await self._messages.__anext__()
        except grpc.RpcError as error:
            raise self._error(error) from None
        value = decode_chunk(message)
        if type(value) is Batch:
            self._pending = pending = collections.deque(value)
            return pending.popleft()
        return value

    def cancel(self) -> None:
        """Cancel the call (no effect once it has ended)."""
        self._call.cancel()

    async def initial_metadata(self) -> Any:
        return await self._call.initial_metadata()

    async def trailing_metadata(self) -> Any:
        return await self._call.trailing_metadata()

    async def __aenter__(self) -> AsyncChunkStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._call.cancel()

    def __del__(self) -> None:
        _cancel_if_running(self)

    def __iter__(self) -> NoReturn:
        raise TypeError("AsyncClient streams are iterated with 'async for'; use Client for 'for'")


def _cancel_if_running(stream: ChunkStream | AsyncChunkStream) -> None:
    # Runs when a stream is dropped (left early): cancel now, not when the GC gets to the call.
    call = getattr(stream, "_call", None)
    if call is not None and not call.done():
        call.cancel()


class Client(BaseClient):
    """A blocking client over one channel; use it as a context manager, or ``close()`` it.

    ``Client(target, tls=None, credentials=None, timeout=None, metadata=None, options=(),
    encoding="json", coalesce=True)``: ``tls`` (a ``ClientTLS``) or raw grpc ``credentials``
    connect over TLS; client-wide ``timeout`` and ``metadata`` apply to every call; ``coalesce``
    lets the server pack chunks that pile up into one message (the client unpacks them, so each
    chunk is still yielded on its own).
    """

    def _open(self) -> None:
        self._channel = (
            grpc.secure_channel(self.target, self._credentials, options=self._channel_options)
            if self._credentials is not None
            else grpc.insecure_channel(self.target, options=self._channel_options)
        )
        self._stub = serverfn_pb2_grpc.ServerFunctionsStub(self._channel)  # type: ignore[no-untyped-call]
        # typeshed's HealthStub declares no methods; the generated one has them.
        self._health: Any = health_pb2_grpc.HealthStub(self._channel)

    def invoke(
        self,
        function: str,
        data: Any = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> ChunkStream:
        """Call ``function`` with ``data`` (None: no input) and stream its chunks."""
        request = self._invoke_request(function, data)
        call = self._stub.Invoke(request, **self._call_options(timeout, metadata))
        return ChunkStream(call, self._error)

    def call(
        self,
        function: str,
        data: Any = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> Any:
        """Call a function that produces exactly one value and return it."""
        with self.invoke(function, data, timeout=timeout, metadata=metadata) as stream:
            values = iter(stream)
            for value in values:
                for _ in values:
                    raise too_many_chunks(function)
                return value
        raise no_chunk(function)

    def functions(self, *, timeout: float | None = None) -> list[FunctionInfo]:
        """The functions the server offers, sorted by name."""
        request = serverfn_pb2.ListFunctionsRequest()
        try:
            response = self._stub.ListFunctions(request, **self._call_options(timeout, None))
        except grpc.RpcError as error:
            raise self._error(error) from None
        return function_infos(response)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The standard health check: ``SERVING``, ``NOT_SERVING``, ... (``""``: the server)."""
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            response = self._health.Check(request, **self._call_options(timeout, None))
        except grpc.RpcError as error:
            raise self._error(error) from None
        return health_status(response)

    def close(self) -> None:
        """Close the channel, cancelling calls still running."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> NoReturn:
        raise TypeError("Client is used with 'with'; for 'async with' use AsyncClient")

    async def __aexit__(self, *exc_info: object) -> None:
        return None


class AsyncClient(BaseClient):
    """An asyncio client over one grpc.aio channel; use it with ``async with``, or ``aclose()``.

    Takes the same arguments as ``Client``. The channel is made on first use, inside the
    event loop that will drive it.
    """

    def _open(self) -> None:
        self._channel: grpc.aio.Channel | None = None
        self._stub: serverfn_pb2_grpc.ServerFunctionsStub | None = None
        self._health: Any = None

    def _connect(self) -> serverfn_pb2_grpc.ServerFunctionsStub:
        if self._stub is None:
            self._channel = (
                grpc.aio.secure_channel(
                    self.target, self._credentials, options=self._channel_options
                )
                if self._credentials is not None
                else grpc.aio.insecure_channel(self.target, options=self._channel_options)
            )
            self._stub = serverfn_pb2_grpc.ServerFunctionsStub(self._channel)  # type: ignore[no-untyped-call]
            self._health = health_pb2_grpc.HealthStub(self._channel)  # see Client.__init__
        return self._stub

    def invoke(
        self,
        function: str,
        data: Any = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> AsyncChunkStream:
        """Call ``function`` with ``data`` (None: no input); ``async for`` its chunks."""
        request = self._invoke_request(function, data)
        call = self._connect().Invoke(request, **self._call_options(timeout, metadata))
        return AsyncChunkStream(call, self._error)

    async def call(
        self,
        function: str,
        data: Any = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> Any:
        """Call a function that produces exactly one value and return it."""
        async with self.invoke(function, data, timeout=timeout, metadata=metadata) as stream:
            values = aiter(stream)
            async for value in values:
                async for _ in values:
                    raise too_many_chunks(function)
                return value
        raise no_chunk(function)

    async def functions(self, *, timeout: float | None = None) -> list[FunctionInfo]:
        """The functions the server offers, sorted by name."""
        request = serverfn_pb2.ListFunctionsRequest()
        try:
            response = await self._connect().ListFunctions(
                request, **self._call_options(timeout, None)
            )
        except grpc.RpcError as error:
            raise self._error(error) from None
        return function_infos(response)

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The standard health check: ``SERVING``, ``NOT_SERVING``, ... (``""``: the server)."""
        self._connect()
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            response = await self._health.Check(request, **self._call_options(timeout, None))
        except grpc.RpcError as error:
            raise self._error(error) from None
        return health_status(response)

    async def aclose(self) -> None:
        """Close the channel, cancelling calls still running."""
        if self._channel is not None:
            await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __enter__(self) -> NoReturn:
        raise TypeError("AsyncClient is used with 'async with'; for 'with' use Client")

    def __exit__(self, *exc_info: object) -> None:
        return None
