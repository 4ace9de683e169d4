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

import asyncio
import collections
import contextlib
import itertools
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any, Literal, NoReturn, overload

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from typing_extensions import TypeVar

from ._client_core import (
    METHOD_LOOKUP_TIMEOUT,
    BaseClient,
    Batch,
    ErrorMapper,
    FunctionInfo,
    MetadataLike,
    Resumer,
    Retrier,
    decode_chunk,
    error_from_rpc_error,
    function_infos,
    health_status,
    no_chunk,
    stream_id_of,
    too_many_chunks,
)
from ._proto.serverfn.v1 import serverfn_pb2, serverfn_pb2_grpc
from .errors import ServerFnError, UnexpectedChunk
from .typed import ServerFn, ServerFnRef, ref_of

__all__ = ["AsyncChunkStream", "AsyncClient", "ChunkStream", "Client"]


T = TypeVar("T", default=Any)  # a bare ChunkStream (an annotation from before) is of Any
I = TypeVar("I")  # noqa: E741
C = TypeVar("C")


class ChunkStream(Iterator[T]):
    """The chunks of one call, decoded; iterate it, and cancel it or leave its ``with`` early.

    Dropping the stream (breaking out of ``for client.invoke(...)``) cancels the call.
    ``ChunkStream[T]``: chunks of type ``T`` (a function called by reference); ``Any`` when
    called by name.
    """

    __slots__ = (
        "_call",
        "_channel",
        "_error",
        "_invoke",
        "_last",
        "_metadata",
        "_method_of",
        "_pending",
        "_resumer",
        "_retrier",
    )

    def __init__(
        self,
        call: Any,
        error: ErrorMapper = error_from_rpc_error,
        resumer: Resumer | None = None,
        invoke: Any = None,
        metadata: Any = None,
        channel: grpc.Channel | None = None,
        retrier: Retrier | None = None,
        method_of: Callable[[str, float | None], str | None] | None = None,
    ) -> None:
        self._call = call
        self._error = error
        self._pending: collections.deque[Any] | None = None  # the rest of a coalesced batch
        self._last: serverfn_pb2.Chunk | None = None  # where a resume starts from
        self._resumer = resumer
        self._invoke = invoke  # the stub method, to resume or make the call again with
        self._metadata = metadata
        self._channel = channel  # to wait on for a connection before resuming
        self._retrier = retrier
        self._method_of = method_of  # a function's method (GET, POST), for the retrier

    def __next__(self) -> T:
        # The per-chunk path: no generator layer, batches unpacked in place. Chunks are plain
        # JSON values here (T is Any); a stream of another T is a _DecodedChunkStream.
        pending = self._pending
        if pending:
            return pending.popleft()  # type: ignore[no-any-return]
        try:
            message = next(self._call)
        except grpc.RpcError as error:
            message = self._after_failure(error)
        self._last = message
        value = decode_chunk(message)
        if type(value) is Batch:
            self._pending = pending = collections.deque(value)
            return pending.popleft()  # type: ignore[no-any-return]
        return value  # type: ignore[no-any-return]

    def _after_failure(self, error: grpc.RpcError) -> serverfn_pb2.Chunk:
        """The next message after the call failed: from a resumed call (a resumable stream,
        ``ResumePolicy``) or from the call made again (``RetryPolicy``), tried again while the
        policies allow; else the call's error raised."""
        resumer, retrier = self._resumer, self._retrier
        while True:
            plan = None
            if resumer is not None:
                resumer.note_metadata(self._call.initial_metadata())
                plan = resumer.plan(error.code(), self._last)
            if plan is not None:
                time.sleep(plan.delay)
                if self._channel is not None and not _ready(self._channel, plan.connect_timeout):
                    continue  # still no server: the next attempt, or the error
                request, timeout = plan.request, plan.timeout
            else:
                retry = None if retrier is None else retrier.plan(error, self._last is not None)
                if retry is None or self._method_of is None:
                    break
                time.sleep(retry.delay)
                if retry.if_get:
                    method = self._method_of(retry.request.function, retry.timeout)
                    if method is None:
                        continue  # not told yet: the next attempt asks again
                    if method != "GET":
                        break
                request, timeout = retry.request, retry.timeout
            self._call = self._invoke(request, timeout=timeout, metadata=self._metadata)
            try:
                message: serverfn_pb2.Chunk = next(self._call)
            except grpc.RpcError as again:
                error = again
                continue
            return message
        raise self._error(error) from None

    def __iter__(self) -> ChunkStream[T]:
        return self

    def cancel(self) -> None:
        """Cancel the call (no effect once it has ended)."""
        _cancel(self)

    def stream_id(self) -> str | None:
        """The id of a resumable function's stream (waits for the server's first response);
        None for other functions. ``client.resume(stream_id, n)`` picks the stream up again."""
        metadata = self._call.initial_metadata()
        if self._resumer is not None:
            return self._resumer.note_metadata(metadata)
        return stream_id_of(metadata)

    def initial_metadata(self) -> Any:
        """The server's initial metadata (waits for it)."""
        return self._call.initial_metadata()

    def trailing_metadata(self) -> Any:
        """The server's trailing metadata (waits for the call to end)."""
        return self._call.trailing_metadata()

    def __enter__(self) -> ChunkStream[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        _cancel(self)

    def __del__(self) -> None:
        _cancel_if_running(self)

    def __aiter__(self) -> NoReturn:
        raise TypeError("Client streams are iterated with 'for'; use AsyncClient for 'async for'")


class AsyncChunkStream(AsyncIterator[T]):
    """The chunks of one call on ``AsyncClient``; ``async for`` it, or ``async with`` it.

    Dropping the stream (breaking out of ``async for``) cancels the call.
    ``AsyncChunkStream[T]`` as ``ChunkStream[T]``.
    """

    __slots__ = (
        "_call",
        "_channel",
        "_error",
        "_invoke",
        "_last",
        "_messages",
        "_metadata",
        "_method_of",
        "_pending",
        "_resumer",
        "_retrier",
    )

    def __init__(
        self,
        call: Any,
        error: ErrorMapper = error_from_rpc_error,
        resumer: Resumer | None = None,
        invoke: Any = None,
        metadata: Any = None,
        channel: grpc.aio.Channel | None = None,
        retrier: Retrier | None = None,
        method_of: Callable[[str, float | None], Awaitable[str | None]] | None = None,
    ) -> None:
        self._call = call
        self._error = error
        self._messages = call.__aiter__()
        self._pending: collections.deque[Any] | None = None
        self._last: serverfn_pb2.Chunk | None = None
        self._resumer = resumer
        self._invoke = invoke
        self._metadata = metadata
        self._channel = channel
        self._retrier = retrier
        self._method_of = method_of

    def __aiter__(self) -> AsyncChunkStream[T]:
        return self

    async def __anext__(self) -> T:
        pending = self._pending
        if pending:
            return pending.popleft()  # type: ignore[no-any-return]
        try:
            message = await self._messages.__anext__()
        except grpc.RpcError as error:
            message = await self._after_failure(error)
        self._last = message
        value = decode_chunk(message)
        if type(value) is Batch:
            self._pending = pending = collections.deque(value)
            return pending.popleft()  # type: ignore[no-any-return]
        return value  # type: ignore[no-any-return]

    async def _after_failure(self, error: grpc.RpcError) -> serverfn_pb2.Chunk:
        """As ``ChunkStream._after_failure``, waiting without blocking the loop."""
        resumer, retrier = self._resumer, self._retrier
        while True:
            plan = None
            if resumer is not None:
                resumer.note_metadata(await self._call.initial_metadata())
                plan = resumer.plan(error.code(), self._last)
            if plan is not None:
                await asyncio.sleep(plan.delay)
                if self._channel is not None and not await _ready_async(
                    self._channel, plan.connect_timeout
                ):
                    continue
                request, timeout = plan.request, plan.timeout
            else:
                retry = None if retrier is None else retrier.plan(error, self._last is not None)
                if retry is None or self._method_of is None:
                    break
                await asyncio.sleep(retry.delay)
                if retry.if_get:
                    method = await self._method_of(retry.request.function, retry.timeout)
                    if method is None:
                        continue
                    if method != "GET":
                        break
                request, timeout = retry.request, retry.timeout
            self._call = self._invoke(request, timeout=timeout, metadata=self._metadata)
            self._messages = self._call.__aiter__()
            try:
                message: serverfn_pb2.Chunk = await self._messages.__anext__()
            except grpc.RpcError as again:
                error = again
                continue
            return message
        raise self._error(error) from None

    def cancel(self) -> None:
        """Cancel the call (no effect once it has ended)."""
        _cancel(self)

    async def stream_id(self) -> str | None:
        """The id of a resumable function's stream (waits for the server's first response);
        None for other functions. ``client.resume(stream_id, n)`` picks the stream up again."""
        metadata = await self._call.initial_metadata()
        if self._resumer is not None:
            return self._resumer.note_metadata(metadata)
        return stream_id_of(metadata)

    async def initial_metadata(self) -> Any:
        return await self._call.initial_metadata()

    async def trailing_metadata(self) -> Any:
        return await self._call.trailing_metadata()

    async def __aenter__(self) -> AsyncChunkStream[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        _cancel(self)

    def __del__(self) -> None:
        _cancel_if_running(self)

    def __iter__(self) -> NoReturn:
        raise TypeError("AsyncClient streams are iterated with 'async for'; use Client for 'for'")


class _DecodedChunkStream(ChunkStream[T]):
    """A stream whose chunks are validated into a function's chunk type (called by reference).
    A subclass, so that calls by name keep the plain per-chunk path."""

    __slots__ = ("_ref",)
    _ref: ServerFnRef[Any, T]

    def __next__(self) -> T:
        value = ChunkStream.__next__(self)
        try:
            return self._ref.decode(value)
        except UnexpectedChunk:
            _cancel(self)  # the rest would be read by nobody
            raise


class _DecodedAsyncChunkStream(AsyncChunkStream[T]):
    """As ``_DecodedChunkStream``, for ``AsyncClient``."""

    __slots__ = ("_ref",)
    _ref: ServerFnRef[Any, T]

    async def __anext__(self) -> T:
        value = await AsyncChunkStream.__anext__(self)
        try:
            return self._ref.decode(value)
        except UnexpectedChunk:
            _cancel(self)
            raise


def _target(
    function: str | ServerFn[Any, Any], decode: bool
) -> tuple[str, ServerFnRef[Any, Any] | None]:
    """The name to send, and the reference that decodes the chunks (None: left as JSON)."""
    if isinstance(function, str):
        return function, None
    ref = ref_of(function)
    return ref.name, ref if decode else None


def _ready(channel: grpc.Channel, timeout: float) -> bool:
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        return False
    return True


async def _ready_async(channel: grpc.aio.Channel, timeout: float) -> bool:
    try:
        await asyncio.wait_for(channel.channel_ready(), timeout)
    except TimeoutError:
        return False
    return True


def _lookup_timeout(timeout: float | None) -> float:
    return METHOD_LOOKUP_TIMEOUT if timeout is None else min(timeout, METHOD_LOOKUP_TIMEOUT)


def _cancel(stream: ChunkStream[Any] | AsyncChunkStream[Any]) -> None:
    # The caller's own cancellation: its CANCELLED is never a reason to call again.
    if stream._retrier is not None:
        stream._retrier.cancelled = True
    stream._call.cancel()


def _cancel_if_running(stream: ChunkStream[Any] | AsyncChunkStream[Any]) -> None:
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
        self._channels = [
            grpc.secure_channel(self.target, self._credentials, options=self._channel_options)
            if self._credentials is not None
            else grpc.insecure_channel(self.target, options=self._channel_options)
            for _ in range(self._channel_count)
        ]
        self._stubs = [
            serverfn_pb2_grpc.ServerFunctionsStub(channel)  # type: ignore[no-untyped-call]
            for channel in self._channels
        ]
        self._stub = self._stubs[0]
        self._next_channel = itertools.cycle(zip(self._channels, self._stubs, strict=True)).__next__
        # typeshed's HealthStub declares no methods; the generated one has them.
        self._health: Any = health_pb2_grpc.HealthStub(self._channels[0])
        self._method_lookup = threading.Lock()

    @overload
    def invoke(
        self,
        function: str,
        data: Any = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> ChunkStream[Any]: ...

    @overload
    def invoke(
        self,
        function: ServerFn[None, C],
        data: None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
        decode: Literal[True] = True,
    ) -> ChunkStream[C]: ...

    @overload
    def invoke(
        self,
        function: ServerFn[I, C],
        data: I,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
        decode: Literal[True] = True,
    ) -> ChunkStream[C]: ...

    @overload
    def invoke(
        self,
        function: ServerFn[Any, Any],
        data: Any = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
        decode: Literal[False],
    ) -> ChunkStream[Any]: ...

    def invoke(
        self,
        function: str | ServerFn[Any, Any],
        data: Any = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
        decode: bool = True,
    ) -> ChunkStream[Any]:
        """Call ``function`` with ``data`` (None: no input) and stream its chunks.

        ``function`` is a name, or a function decorated with ``@fns.server_fn`` (or a
        ``ServerFnRef``): then the chunks are typed, and validated into its chunk type unless
        ``decode=False`` (``UnexpectedChunk`` when one does not fit). A resumable function's
        stream resumes by itself when its connection drops (see ``ResumePolicy``), so the loop
        sees every chunk once, in order.
        """
        name, ref = _target(function, decode)
        request = self._invoke_request(name, data)
        return self._stream(request, timeout, metadata, None, ref)

    def resume(
        self,
        stream_id: str,
        next_seq: int = 0,
        *,
        function: str = "",
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> ChunkStream:
        """Pick a resumable stream up again from chunk ``next_seq`` (0: from the start), on
        any server sharing its stream store; NotFound once it has expired."""
        request = self._resume_request(stream_id, next_seq, function)
        return self._stream(request, timeout, metadata, stream_id)

    def _stream(
        self,
        request: serverfn_pb2.InvokeRequest,
        timeout: float | None,
        metadata: MetadataLike | None,
        stream_id: str | None,
        ref: ServerFnRef[Any, Any] | None = None,
    ) -> ChunkStream[Any]:
        options = self._call_options(timeout, metadata)
        channel, stub = self._next_channel()
        invoke = stub.Invoke
        kind = ChunkStream if ref is None else _DecodedChunkStream
        stream: ChunkStream[Any] = kind(
            invoke(request, **options),
            self._error,
            self._resumer(request, timeout, stream_id),
            invoke,
            options["metadata"],
            channel,
            self._retrier(request, timeout),
            self._method_of,
        )
        if ref is not None:
            stream._ref = ref  # type: ignore[attr-defined]  # set once, on the subclass
        return stream

    def _method_of(self, function: str, timeout: float | None) -> str | None:
        """The method of ``function`` (GET, POST), asking the server if need be; None when
        it cannot be told (yet)."""
        method = self._methods.get(function)
        if method is not None:
            return method
        asked = self._lookups
        with self._method_lookup:  # one ListFunctions at a time, whatever number of calls wait
            if self._should_look_up(asked):
                with contextlib.suppress(ServerFnError):
                    self.functions(timeout=_lookup_timeout(timeout))
            return self._methods.get(function)

    def cancel_stream(
        self,
        stream_id: str,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> bool:
        """Stop a resumable stream's producer, wherever it runs; False if it had ended. Only
        the identity that started the stream may stop it (on a server with authentication)."""
        request = serverfn_pb2.CancelStreamRequest(stream_id=stream_id)
        try:
            response = self._stub.CancelStream(request, **self._call_options(timeout, metadata))
        except grpc.RpcError as error:
            raise self._error(error) from None
        return bool(response.was_running)

    @overload
    def call(
        self,
        function: str,
        data: Any = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> Any: ...

    @overload
    def call(
        self,
        function: ServerFn[None, C],
        data: None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
        decode: Literal[True] = True,
    ) -> C: ...

    @overload
    def call(
        self,
        function: ServerFn[I, C],
        data: I,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
        decode: Literal[True] = True,
    ) -> C: ...

    @overload
    def call(
        self,
        function: ServerFn[Any, Any],
        data: Any = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
        decode: Literal[False],
    ) -> Any: ...

    def call(
        self,
        function: str | ServerFn[Any, Any],
        data: Any = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
        decode: bool = True,
    ) -> Any:
        """Call a function that produces exactly one value and return it (a name, or a function
        by reference, as ``invoke``)."""
        name, ref = _target(function, decode)
        request = self._invoke_request(name, data)
        with self._stream(request, timeout, metadata, None, ref) as stream:
            values = iter(stream)
            for value in values:
                for _ in values:
                    raise too_many_chunks(name)
                return value
        raise no_chunk(name)

    def functions(self, *, timeout: float | None = None) -> list[FunctionInfo]:
        """The functions the server offers, sorted by name."""
        request = serverfn_pb2.ListFunctionsRequest()
        try:
            response = self._stub.ListFunctions(request, **self._call_options(timeout, None))
        except grpc.RpcError as error:
            raise self._error(error) from None
        infos = function_infos(response)
        self._learn_methods(infos)
        return infos

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The standard health check: ``SERVING``, ``NOT_SERVING``, ... (``""``: the server)."""
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            response = self._health.Check(request, **self._call_options(timeout, None))
        except grpc.RpcError as error:
            raise self._error(error) from None
        return health_status(response)

    def close(self) -> None:
        """Close the channels, cancelling calls still running."""
        self._closed = True
        for channel in self._channels:
            channel.close()

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
        self._channels: list[grpc.aio.Channel] = []
        self._stub: serverfn_pb2_grpc.ServerFunctionsStub | None = None
        self._next_channel: (
            Callable[[], tuple[grpc.aio.Channel, serverfn_pb2_grpc.ServerFunctionsStub]] | None
        ) = None
        self._health: Any = None
        self._method_lookup = asyncio.Lock()

    def _connect(self) -> tuple[grpc.aio.Channel, serverfn_pb2_grpc.ServerFunctionsStub]:
        """The channel and stub for the next call (made on first use, round-robin after)."""
        if self._next_channel is None:
            self._channels = [
                grpc.aio.secure_channel(
                    self.target, self._credentials, options=self._channel_options
                )
                if self._credentials is not None
                else grpc.aio.insecure_channel(self.target, options=self._channel_options)
                for _ in range(self._channel_count)
            ]
            stubs = [
                serverfn_pb2_grpc.ServerFunctionsStub(channel)  # type: ignore[no-untyped-call]
                for channel in self._channels
            ]
            self._stub = stubs[0]
            self._next_channel = itertools.cycle(zip(self._channels, stubs, strict=True)).__next__
            self._health = health_pb2_grpc.HealthStub(self._channels[0])  # see Client._open
        return self._next_channel()

    @overload
    def invoke(
        self,
        function: str,
        data: Any = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> AsyncChunkStream[Any]: ...

    @overload
    def invoke(
        self,
        function: ServerFn[None, C],
        data: None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
        decode: Literal[True] = True,
    ) -> AsyncChunkStream[C]: ...

    @overload
    def invoke(
        self,
        function: ServerFn[I, C],
        data: I,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
        decode: Literal[True] = True,
    ) -> AsyncChunkStream[C]: ...

    @overload
    def invoke(
        self,
        function: ServerFn[Any, Any],
        data: Any = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
        decode: Literal[False],
    ) -> AsyncChunkStream[Any]: ...

    def invoke(
        self,
        function: str | ServerFn[Any, Any],
        data: Any = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
        decode: bool = True,
    ) -> AsyncChunkStream[Any]:
        """Call ``function`` with ``data`` (None: no input); ``async for`` its chunks. Takes a
        name or a function by reference, as ``Client.invoke``. A resumable function's stream
        resumes by itself when its connection drops."""
        name, ref = _target(function, decode)
        request = self._invoke_request(name, data)
        return self._stream(request, timeout, metadata, None, ref)

    def resume(
        self,
        stream_id: str,
        next_seq: int = 0,
        *,
        function: str = "",
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> AsyncChunkStream:
        """Pick a resumable stream up again from chunk ``next_seq`` (see ``Client.resume``)."""
        request = self._resume_request(stream_id, next_seq, function)
        return self._stream(request, timeout, metadata, stream_id)

    def _stream(
        self,
        request: serverfn_pb2.InvokeRequest,
        timeout: float | None,
        metadata: MetadataLike | None,
        stream_id: str | None,
        ref: ServerFnRef[Any, Any] | None = None,
    ) -> AsyncChunkStream[Any]:
        options = self._call_options(timeout, metadata)
        channel, stub = self._connect()
        invoke = stub.Invoke
        kind = AsyncChunkStream if ref is None else _DecodedAsyncChunkStream
        stream: AsyncChunkStream[Any] = kind(
            invoke(request, **options),
            self._error,
            self._resumer(request, timeout, stream_id),
            invoke,
            options["metadata"],
            channel,
            self._retrier(request, timeout),
            self._method_of,
        )
        if ref is not None:
            stream._ref = ref  # type: ignore[attr-defined]  # set once, on the subclass
        return stream

    async def _method_of(self, function: str, timeout: float | None) -> str | None:
        """As ``Client._method_of``."""
        method = self._methods.get(function)
        if method is not None:
            return method
        asked = self._lookups
        async with self._method_lookup:
            if self._should_look_up(asked):
                with contextlib.suppress(ServerFnError):
                    await self.functions(timeout=_lookup_timeout(timeout))
            return self._methods.get(function)

    async def cancel_stream(
        self,
        stream_id: str,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> bool:
        """Stop a resumable stream's producer, wherever it runs; False if it had ended. Only
        the identity that started the stream may stop it (on a server with authentication)."""
        self._connect()
        assert self._stub is not None
        request = serverfn_pb2.CancelStreamRequest(stream_id=stream_id)
        try:
            response = await self._stub.CancelStream(
                request, **self._call_options(timeout, metadata)
            )
        except grpc.RpcError as error:
            raise self._error(error) from None
        return bool(response.was_running)

    @overload
    async def call(
        self,
        function: str,
        data: Any = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
    ) -> Any: ...

    @overload
    async def call(
        self,
        function: ServerFn[None, C],
        data: None = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
        decode: Literal[True] = True,
    ) -> C: ...

    @overload
    async def call(
        self,
        function: ServerFn[I, C],
        data: I,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
        decode: Literal[True] = True,
    ) -> C: ...

    @overload
    async def call(
        self,
        function: ServerFn[Any, Any],
        data: Any = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
        decode: Literal[False],
    ) -> Any: ...

    async def call(
        self,
        function: str | ServerFn[Any, Any],
        data: Any = None,
        *,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
        decode: bool = True,
    ) -> Any:
        """Call a function that produces exactly one value and return it (a name, or a function
        by reference, as ``invoke``)."""
        name, ref = _target(function, decode)
        request = self._invoke_request(name, data)
        async with self._stream(request, timeout, metadata, None, ref) as stream:
            values = aiter(stream)
            async for value in values:
                async for _ in values:
                    raise too_many_chunks(name)
                return value
        raise no_chunk(name)

    async def functions(self, *, timeout: float | None = None) -> list[FunctionInfo]:
        """The functions the server offers, sorted by name."""
        request = serverfn_pb2.ListFunctionsRequest()
        try:
            response = await self._connect()[1].ListFunctions(
                request, **self._call_options(timeout, None)
            )
        except grpc.RpcError as error:
            raise self._error(error) from None
        infos = function_infos(response)
        self._learn_methods(infos)
        return infos

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
        """Close the channels, cancelling calls still running."""
        self._closed = True
        for channel in self._channels:
            await channel.close()

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
