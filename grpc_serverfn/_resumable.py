"""Resumable streams, on the server: the producer detached from the call, every chunk stored,
and every call (the first, or a resume on any server sharing the store) a reader of the store.

A call to a ``@server_fn(resumable=True)`` function gets a stream id, announced in the call's
initial metadata (``serverfn-stream-id``). Its handler runs in a producer task that appends each
chunk to the ``StreamStore`` and, at the end, the stream's status. The call itself only reads
the store from its position on, so a dropped connection loses nothing: a resume (stream id,
next sequence number) starts a new reader where the last one stopped. The producer runs on
while any reader renewed its lease within ``idle_ttl`` seconds, and stops (with its cleanup) on
``CancelStream`` or when nobody reads; the stored stream expires ``retention`` seconds after its
last write.

The stream id is the capability to read the stream: 128 random bits, shown only to the caller
that started it. A stream also records the identity that started it (``owner``): the call core
lets only the same identity resume or cancel it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.rpc import status_pb2

from . import _codec as codec
from ._sending import ChunkEncoder, Encoded, stop
from ._wire import CODE_BY_NUMBER, GRPC_DETAILS_METADATA_KEY
from .config import StreamOptions
from .context import Context
from .errors import (
    Aborted,
    Cancelled,
    Internal,
    NotFound,
    ServerFnError,
    Unavailable,
    echoed,
    error_from_status,
)
from .middleware import close_quietly
from .store import MemoryStreamStore, StreamEnd, StreamInfo, StreamStore

__all__ = ["ResumableStreams", "unknown_stream"]

logger = logging.getLogger("grpc_serverfn.server")

_TICK = 0.25  # seconds between a producer's checks for cancel requests and readers
_PRODUCER_TTL = 5.0  # a producer's lease: readers call the stream lost this long after a crash


class ResumableStreams:
    """The resumable streams of one server: its producers, and reading any stream of the store.

    Every failure of the store reaches the caller as UNAVAILABLE (its cause goes to the log).
    """

    def __init__(self, options: StreamOptions, *, max_chunk_bytes: int) -> None:
        self.store: StreamStore = (
            options.store if options.store is not None else MemoryStreamStore()
        )
        self.idle_ttl = options.idle_ttl
        self.retention = options.retention
        self._max_chunk_bytes = max_chunk_bytes
        # A reader renews its lease a few times per idle TTL, and at least once a second.
        self._renew_every = min(1.0, self.idle_ttl / 3)
        self._producers: dict[str, asyncio.Task[None]] = {}

    @property
    def producing(self) -> int:
        """How many streams this server is producing now."""
        return len(self._producers)

    async def describe(self, stream_id: str) -> StreamInfo | None:
        """The stream's function and owner; None when it is unknown or has expired."""
        if not stream_id:
            return None
        try:
            return await self.store.describe(stream_id)
        except Exception:
            raise _store_failed(f"looking up stream {stream_id}") from None

    async def start(
        self,
        function: str,
        chunks: AsyncIterator[Any],
        ctx: Context,
        *,
        owner: str,
        call_id: str,
    ) -> str:
        """Start producing a new stream from ``chunks`` (a handler's, just opened); its id.
        ``call_id`` is the starting call's, which an INTERNAL error of the stream names."""
        stream_id = secrets.token_hex(16)
        try:
            await self.store.create(
                stream_id,
                function,
                owner=owner,
                retention=self.retention,
                producer_ttl=_PRODUCER_TTL,
            )
            # The first reader is the caller, about to attach: count it from now.
            await self.store.reader_heartbeat(stream_id, self.idle_ttl)
        except Exception:
            await close_quietly(chunks, function)
            raise _store_failed(f"starting a stream of {function!r}") from None
        task = asyncio.create_task(self._produce(stream_id, function, chunks, ctx, call_id))
        self._producers[stream_id] = task
        task.add_done_callback(lambda _: self._producers.pop(stream_id, None))
        return stream_id

    async def _produce(
        self, stream_id: str, name: str, chunks: AsyncIterator[Any], ctx: Context, call_id: str
    ) -> None:
        encoder = ChunkEncoder("json", name, self._max_chunk_bytes)
        produced = 0

        async def pump() -> None:
            nonlocal produced
            async for value in chunks:
                text, _ = encoder.payload(value, produced)
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
                    ctx._mark_cancelled()  # before the handler's cleanup runs, so it sees it
                    await stop(handler, name)
        except asyncio.CancelledError:
            stopped = Aborted(
                f"the server producing stream {stream_id} shut down before it finished"
            )
            ctx._mark_cancelled()
            await stop(handler, name)
            raise
        finally:
            await close_quietly(chunks, name)
            end = _end_of(handler, stopped, name, stream_id, call_id)
            try:
                await self.store.finish(stream_id, produced, end)
            except Exception:
                logger.exception("could not record the end of stream %s", stream_id)

    async def read(
        self, stream_id: str, next_seq: int, *, leased: bool, encoded: bool
    ) -> AsyncIterator[Any]:
        """The stream's chunks from ``next_seq`` on, live until it ends; raises the stream's
        own error at its end. ``leased``: the readers' lease was just taken (``start``).
        ``encoded``: yield ``Encoded`` JSON texts as stored rather than decoded values."""
        store = self.store
        try:
            producer_alive = leased or await store.reader_heartbeat(stream_id, self.idle_ttl)
            renewed = time.monotonic()
            while True:
                found = await store.read(stream_id, next_seq, wait=self._renew_every)
                if found is None:
                    raise unknown_stream(stream_id)
                for text in found.chunks:
                    yield Encoded(text) if encoded else codec.decode_json(text)
                next_seq += len(found.chunks)
                if found.end is not None:
                    error = _error_of(found.end)
                    if error is not None:
                        raise error
                    return
                if time.monotonic() - renewed >= self._renew_every:
                    producer_alive = await store.reader_heartbeat(stream_id, self.idle_ttl)
                    renewed = time.monotonic()
                if not producer_alive and not found.chunks:
                    # Nothing came and nobody is producing: one last look for a late end.
                    last = await store.read(stream_id, next_seq, wait=0.001)
                    if last is None or last.chunks or last.end is not None:
                        continue
                    raise Aborted(
                        f"the producer of stream {stream_id} stopped without finishing (its"
                        f" server went away); {next_seq} chunks were delivered"
                    )
        except ServerFnError:
            raise
        except Exception:
            raise _store_failed(f"reading stream {stream_id}") from None

    async def cancel(self, stream_id: str) -> bool:
        """Ask the stream's producer to stop, wherever it runs; False when it had ended."""
        try:
            running = await self.store.request_cancel(stream_id)
        except Exception:
            raise _store_failed(f"cancelling stream {stream_id}") from None
        if running is None:
            raise unknown_stream(stream_id)
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
    handler: asyncio.Task[None],
    stopped: ServerFnError | None,
    name: str,
    stream_id: str,
    call_id: str,
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
                "server function %r raised an unexpected error (call %s, stream %s)",
                name,
                call_id,
                stream_id,
                exc_info=(type(raised), raised, raised.__traceback__),
            )
            error = unexpected_error(name, call_id)
    if error is None:
        return StreamEnd(0)
    status = error.to_rpc_status()
    return StreamEnd(status.code, status.message, status.SerializeToString())


def unexpected_error(function: str, call_id: str) -> Internal:
    """What the caller learns of an unexpected exception: nothing but where to look."""
    return Internal(f"server function {function!r} failed; see the server log (call {call_id})")


def _error_of(end: StreamEnd) -> ServerFnError | None:
    if end.code == 0:
        return None
    code = CODE_BY_NUMBER.get(end.code, grpc.StatusCode.UNKNOWN)
    message = end.message
    if end.details:
        message = status_pb2.Status.FromString(end.details).message or message
    return error_from_status(code, message, [(GRPC_DETAILS_METADATA_KEY, end.details)])


def unknown_stream(stream_id: str) -> NotFound:
    """The refusal of a stream that is unknown, expired, or not the caller's to read: the same
    words for each, so a refusal does not tell whether the stream exists."""
    return NotFound(
        f"no resumable stream {echoed(stream_id)}: it never existed, or its retention has"
        " passed and it was deleted"
    )


def _store_failed(doing: str) -> Unavailable:
    logger.exception("the stream store failed %s", doing)
    return Unavailable("the server's stream store failed; see the server log")
