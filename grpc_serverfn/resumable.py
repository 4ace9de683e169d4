"""Resumable streams, on the server: the producer detached from the call, every chunk stored,
and any call (the first, or a resume on any server sharing the store) a reader of the store.

A call to a ``@server_fn(resumable=True)`` function gets a stream id, announced in the call's
initial metadata (``serverfn-stream-id``). Its handler runs in a producer task that appends
each chunk to the ``StreamStore`` and, at the end, the stream's status. The call itself only
reads the store from its position on and writes what it finds, so a dropped connection loses
nothing: ``InvokeRequest.resume`` (stream id, next sequence number) starts a new reader where
the last one stopped. The producer runs on while any reader renewed its lease within
``idle_ttl`` seconds, and stops (with its cleanup) on ``CancelStream`` or when nobody reads;
the stored stream expires ``retention`` seconds after its last write.

The stream id is the capability to read the stream: 128 random bits, shown only to the caller
that started it. A resume does not run the registry's middleware again.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio
from google.rpc import status_pb2

from . import codec
from .config import DEFAULT_IDLE_TTL, DEFAULT_RETENTION
from .errors import (
    GRPC_DETAILS_METADATA_KEY,
    Aborted,
    Cancelled,
    Internal,
    InvalidArgument,
    NotFound,
    ServerFnError,
    echoed,
    error_from_status,
)
from .middleware import Call, close_opened
from .observe import Sent
from .store import MemoryStreamStore, StreamEnd, StreamStore
from .streaming import (
    Encoding,
    Write,
    chunk_message,
    size_over,
    stop,
    too_large,
    unencodable,
    write_or_end,
)

__all__ = [
    "DEFAULT_IDLE_TTL",
    "DEFAULT_RETENTION",
    "STREAM_ID_METADATA_KEY",
    "ResumableStreams",
]

logger = logging.getLogger("grpc_serverfn.server")

STREAM_ID_METADATA_KEY = "serverfn-stream-id"
"""The initial-metadata key that carries a resumable call's stream id."""
_TICK = 0.25  # seconds between a producer's checks for cancel requests and readers
_PRODUCER_TTL = 5.0  # a producer's lease: readers call the stream lost this long after a crash
_CODES: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}

OpenChain = Callable[[Call], AsyncIterator[Any]]


class ResumableStreams:
    """The resumable streams of one server: its producers, and reading any stream of the store."""

    def __init__(
        self,
        store: StreamStore | None = None,
        *,
        idle_ttl: float = DEFAULT_IDLE_TTL,
        retention: float = DEFAULT_RETENTION,
        max_chunk_bytes: int,
        max_batch_bytes: int,
    ) -> None:
        if idle_ttl <= 0 or retention <= 0:
            raise ValueError("idle_ttl and retention must be positive (seconds)")
        self.store: StreamStore = store if store is not None else MemoryStreamStore()
        self.idle_ttl = idle_ttl
        self.retention = retention
        self._max_chunk_bytes = max_chunk_bytes
        self._max_batch_bytes = max_batch_bytes
        # A reader renews its lease a few times per idle TTL, and at least once a second.
        self._renew_every = min(1.0, idle_ttl / 3)
        self._producers: dict[str, asyncio.Task[None]] = {}

    @property
    def producing(self) -> int:
        """How many streams this server is producing now."""
        return len(self._producers)

    async def start(self, call: Call, open_chain: OpenChain) -> str:
        """Start producing a new stream for ``call``; its id."""
        stream_id = secrets.token_hex(16)
        await self.store.create(
            stream_id, call.function.name, retention=self.retention, producer_ttl=_PRODUCER_TTL
        )
        # The first reader is the caller, about to attach: count it from now.
        await self.store.reader_heartbeat(stream_id, self.idle_ttl)
        task = asyncio.create_task(self._produce(stream_id, call, open_chain))
        self._producers[stream_id] = task
        task.add_done_callback(lambda _: self._producers.pop(stream_id, None))
        return stream_id

    async def _produce(self, stream_id: str, call: Call, open_chain: OpenChain) -> None:
        name = call.function.name
        produced = 0

        async def pump() -> None:
            nonlocal produced
            async for value in open_chain(call):
                try:
                    text = codec.encode_json(value)
                except codec.UnencodableValue as error:
                    raise unencodable(name, produced, error) from None
                if size := size_over(text, self._max_chunk_bytes):
                    raise too_large(name, produced, size, self._max_chunk_bytes)
                await self.store.append(stream_id, produced, (text,))
                produced += 1

        handler = asyncio.create_task(pump())
        stopped: ServerFnError | None = None
        try:
            while not handler.done():
                await asyncio.wait((handler,), timeout=_TICK)
                if handler.done():
                    break
                beat = await self.store.producer_heartbeat(stream_id, _PRODUCER_TTL)
                if beat.cancel_requested:
                    stopped = Cancelled(f"stream {stream_id} was cancelled (CancelStream)")
                elif not beat.reader_seen:
                    stopped = Cancelled(
                        f"stream {stream_id} had no reader for {self.idle_ttl:g} s, so its"
                        " producer was stopped"
                    )
                if stopped is not None:
                    await stop(handler, name)
        except asyncio.CancelledError:
            stopped = Aborted(
                f"the server producing stream {stream_id} shut down before it finished"
            )
            await stop(handler, name)
            raise
        finally:
            if stopped is not None:
                call.ctx._mark_cancelled()
            await close_opened(call)
            end = _end_of(handler, stopped, name, stream_id)
            try:
                await self.store.finish(stream_id, produced, end)
            except Exception:
                logger.exception("could not record the end of stream %s", stream_id)

    async def serve(
        self,
        stream_id: str,
        next_seq: int,
        context: grpc.aio.ServicerContext[Any, Any],
        encoding: Encoding,
        max_batch: int,
        *,
        function: str | None = None,
        sent: Sent | None = None,
        started_here: bool = False,
    ) -> ServerFnError | None:
        """Write the stream's chunks from ``next_seq`` on to the call, live until it ends; the
        stream's own error (None for OK). Raises NotFound for an unknown or expired stream,
        InvalidArgument when ``function`` is given and the stream is another function's.
        ``started_here``: ``start`` just made the stream (and took the readers' lease), so it
        is neither looked up nor leased again."""
        if not started_here:
            stored = await self.store.function_of(stream_id) if stream_id else None
            if stored is None:
                raise _unknown_stream(stream_id)
            if function is not None and function != stored:
                raise InvalidArgument(
                    f"stream {stream_id} is a stream of {stored!r}, not of {echoed(function)}",
                    field_violations=[("function", f"the stream belongs to {stored!r}")],
                )
        await context.send_initial_metadata(((STREAM_ID_METADATA_KEY, stream_id),))
        producer_alive = started_here or await self.store.reader_heartbeat(stream_id, self.idle_ttl)
        renewed = time.monotonic()
        write = context.write
        while True:
            found = await self.store.read(stream_id, next_seq, wait=self._renew_every)
            if found is None:
                raise _unknown_stream(stream_id)
            if found.chunks:
                messages = await self._send(write, found.chunks, next_seq, encoding, max_batch)
                next_seq += len(found.chunks)
                if sent is not None:
                    if sent.first_at is None:
                        sent.first_at = time.perf_counter()
                    sent.messages += messages
                    sent.chunks += len(found.chunks)
            if found.end is not None:
                return _error_of(found.end)
            if time.monotonic() - renewed >= self._renew_every:
                producer_alive = await self.store.reader_heartbeat(stream_id, self.idle_ttl)
                renewed = time.monotonic()
            if not producer_alive and not found.chunks:
                # Nothing came and nobody is producing: one last look for a late end.
                last = await self.store.read(stream_id, next_seq, wait=0.001)
                if last is None or last.chunks or last.end is not None:
                    continue
                raise Aborted(
                    f"the producer of stream {stream_id} stopped without finishing (its server"
                    f" went away); {next_seq} chunks were delivered"
                )

    async def _send(
        self, write: Write, chunks: Any, first_seq: int, encoding: Encoding, max_batch: int
    ) -> int:
        """Write ``chunks`` in as few messages as ``max_batch`` and the byte bound allow; how
        many messages."""
        seq = first_seq
        messages = 1
        pending: list[Any] = []
        size = 0
        for text in chunks:
            payload: Any = text if encoding == "json" else codec.to_value(codec.decode_json(text))
            if pending and (len(pending) >= max_batch or size + len(text) > self._max_batch_bytes):
                await write_or_end(write, chunk_message(pending, seq, encoding))
                seq += len(pending)
                messages += 1
                pending, size = [], 0
            pending.append(payload)
            size += len(text)
        if pending:
            await write_or_end(write, chunk_message(pending, seq, encoding))
        return messages

    async def cancel(self, stream_id: str) -> bool:
        """Ask the stream's producer to stop, wherever it runs; False when it had ended."""
        running = await self.store.request_cancel(stream_id)
        if running is None:
            raise _unknown_stream(stream_id)
        return running

    async def stop_producing(self) -> None:
        """Stop every producer of this server (at shutdown), each stream ending ABORTED."""
        producers = list(self._producers.values())
        for task in producers:
            task.cancel()
        if producers:
            await asyncio.wait(producers)

    async def wait_producers(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for this server's producers to finish by themselves."""
        producers = list(self._producers.values())
        if producers and timeout > 0:
            await asyncio.wait(producers, timeout=timeout)


def _end_of(
    handler: asyncio.Task[None], stopped: ServerFnError | None, name: str, stream_id: str
) -> StreamEnd:
    error: ServerFnError | None = stopped
    if error is None and handler.cancelled():
        error = Cancelled(f"server function {name!r} was cancelled")
    elif error is None and handler.done():
        raised = handler.exception()
        if isinstance(raised, ServerFnError):
            error = raised
        elif raised is not None:
            logger.error(
                "server function %r raised an unexpected error (stream %s)",
                name,
                stream_id,
                exc_info=(type(raised), raised, raised.__traceback__),
            )
            error = Internal(
                f"server function {name!r} failed; see the server log (stream {stream_id})"
            )
    if error is None:
        return StreamEnd(0)
    status = error.to_rpc_status()
    return StreamEnd(status.code, status.message, status.SerializeToString())


def _error_of(end: StreamEnd) -> ServerFnError | None:
    if end.code == 0:
        return None
    code = _CODES.get(end.code, grpc.StatusCode.UNKNOWN)
    message = end.message
    if end.details:
        message = status_pb2.Status.FromString(end.details).message or message
    return error_from_status(code, message, [(GRPC_DETAILS_METADATA_KEY, end.details)])


def _unknown_stream(stream_id: str) -> NotFound:
    return NotFound(
        f"no resumable stream {echoed(stream_id)}: it never existed, or its retention has"
        " passed and it was deleted"
    )
