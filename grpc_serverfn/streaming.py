"""Writing a handler's chunks to the call: one message per chunk, or coalesced.

Every write waits until the transport has taken the message, so the handler is advanced only
as fast as the caller reads (backpressure). When the caller opts in (``max_batch`` > 1), the
handler runs in a producer task while a write is in flight, and the chunks it produced
meanwhile go out together as one ``ChunkBatch`` message. A chunk is never held back waiting
for company: when no write is in flight, the next chunk is written at once. The producer
encodes each chunk as it comes and stops when it is ``max_batch`` chunks, or a batch's byte
bound, ahead of the writer, so that big chunks pile up by bytes, not by count.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from . import codec
from ._proto.serverfn.v1 import serverfn_pb2
from .errors import Internal, InvalidArgument, ResourceExhausted
from .observe import Sent

__all__ = [
    "MAX_BATCH",
    "CallEnded",
    "Encoding",
    "Stragglers",
    "Write",
    "chunk_message",
    "encoding_for",
    "message_limits",
    "send_coalesced",
    "send_each",
    "size_over",
    "stop",
    "too_large",
    "unencodable",
    "write_or_end",
]

logger = logging.getLogger("grpc_serverfn.server")

Encoding = codec.Encoding
Write = Callable[[serverfn_pb2.Chunk], Awaitable[None]]

_STOP_INTERVAL = 0.25  # seconds between cancellations of a producer that ignores them
_STOP_ATTEMPTS = 40
_IGNORED = "server function %r ignored %d cancellations; leaving it running"

MAX_BATCH = 1024
"""The most chunks the server packs into one message, whatever the caller asks for."""


class CallEnded(Exception):
    """The call was over (cancelled, deadline passed, connection lost) when a write was tried."""


def encoding_for(request: serverfn_pb2.InvokeRequest) -> Encoding:
    """The chunk encoding a request asks for (by default, the one its input used)."""
    accept = request.accept
    if accept == serverfn_pb2.ENCODING_UNSPECIFIED:
        return "value" if request.WhichOneof("input") == "value" else "json"
    if accept == serverfn_pb2.ENCODING_JSON:
        return "json"
    if accept == serverfn_pb2.ENCODING_VALUE:
        return "value"
    raise InvalidArgument(
        f"unknown accept encoding {accept}; expected ENCODING_JSON (1) or ENCODING_VALUE (2)",
        field_violations=[("accept", f"unknown encoding {accept}")],
    )


def size_over(text: str, limit: int) -> int:
    """The UTF-8 size of ``text`` when it is over ``limit`` bytes, else 0. Only text long enough
    to pass the limit at 4 bytes a character is measured (the per-chunk path stays cheap)."""
    if len(text) * 4 > limit and (size := len(text.encode())) > limit:
        return size
    return 0


def _json_chunk(value: Any, seq: int, limit: int) -> serverfn_pb2.Chunk:
    text = codec.encode_json(value)
    if size := size_over(text, limit):
        raise _TooLarge(size)
    return serverfn_pb2.Chunk(json=text, seq=seq)


def _value_chunk(value: Any, seq: int, limit: int) -> serverfn_pb2.Chunk:
    chunk = serverfn_pb2.Chunk(seq=seq)
    codec.fill_value(chunk.value, value)
    size = chunk.ByteSize()
    if size > limit:
        raise _TooLarge(size)
    return chunk


def chunk_message(payloads: list[Any], seq: int, encoding: Encoding) -> serverfn_pb2.Chunk:
    """The message for encoded payloads starting at ``seq``: one chunk, or a ChunkBatch."""
    if len(payloads) == 1:
        if encoding == "json":
            return serverfn_pb2.Chunk(json=payloads[0], seq=seq)
        return serverfn_pb2.Chunk(value=payloads[0], seq=seq)
    if encoding == "json":
        return serverfn_pb2.Chunk(seq=seq, batch=serverfn_pb2.ChunkBatch(json=payloads))
    return serverfn_pb2.Chunk(seq=seq, batch=serverfn_pb2.ChunkBatch(values=payloads))


def message_limits(max_message_bytes: int) -> tuple[int, int]:
    """A server's bounds for one chunk (bytes, with room for the message's framing) and for a
    batch (characters: at up to 4 UTF-8 bytes each, a batch stays under the message limit)."""
    return max(1, max_message_bytes - 64), max(1, max_message_bytes // 4 - 1024)


class _TooLarge(Exception):
    def __init__(self, size: int) -> None:
        self.size = size


def too_large(function: str, seq: int, size: int, limit: int) -> ResourceExhausted:
    """The error that ends a call whose handler produced a chunk over the size limit."""
    return ResourceExhausted(
        f"server function {function!r} produced chunk {seq} of {size} bytes, over the"
        f" server's limit of {limit} bytes per chunk"
    )


async def write_or_end(write: Write, message: serverfn_pb2.Chunk) -> None:
    """Write one message; CallEnded when the call is over."""
    try:
        await write(message)
    except asyncio.CancelledError:
        raise
    except Exception:
        raise CallEnded from None


def unencodable(function: str, seq: int, error: codec.UnencodableValue) -> Internal:
    """The error that ends a call whose handler produced a value JSON cannot represent."""
    logger.error(
        "server function %r produced chunk %d of type %s, which cannot be encoded as JSON: %s",
        function,
        seq,
        error.type_name,
        error.reason,
    )
    return Internal(
        f"server function {function!r} produced a value of type {error.type_name!r}"
        f" that cannot be encoded as JSON ({error.reason})"
    )


async def send_each(
    chunks: AsyncIterator[Any],
    write: Write,
    encoding: Encoding,
    function: str,
    *,
    max_chunk_bytes: int,
    sent: Sent,
) -> None:
    """Write every chunk as its own message (what callers that did not opt in get), counting
    them in ``sent``."""
    encode = _json_chunk if encoding == "json" else _value_chunk
    seq = 0
    # The per-chunk path: no allocation or call here that is not needed (the write's error
    # handling is inlined rather than wrapped in another coroutine).
    try:
        async for value in chunks:
            try:
                message = encode(value, seq, max_chunk_bytes)
            except codec.UnencodableValue as error:
                raise unencodable(function, seq, error) from None
            except _TooLarge as error:
                raise too_large(function, seq, error.size, max_chunk_bytes) from None
            try:
                await write(message)
            except asyncio.CancelledError:
                # grpc had the message before the cancel came: the caller may well have it.
                seq += 1
                raise
            except Exception:
                raise CallEnded from None
            if not seq:
                sent.first_at = time.perf_counter()
            seq += 1
    finally:
        sent.chunks = sent.messages = seq


class Stragglers:
    """Calls whose task runs on after it was cancelled.

    grpc cancels a call's task once (the caller cancelled, its deadline passed, the server is
    stopping); a handler that swallows that CancelledError (a bare ``except BaseException``)
    would run on. While calls are watched, one sweep every 0.25 s cancels again each task that
    was already cancelled and still running at the sweep before, for up to about ten seconds.
    Per call this costs a dictionary entry, not a task of its own (which cost each open
    stream about 1.9 KiB); per server, one timer while calls run.
    """

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[Any], tuple[str, int]] = {}  # function, sweeps seen
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, function: str) -> asyncio.Task[Any]:
        """Watch the current task (a call's); ``forget`` it when the call is over."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks[task] = (function, 0)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(_STOP_INTERVAL, self._sweep)
        return task

    def forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)

    def _sweep(self) -> None:
        self._timer = None
        for task, (function, sweeps) in list(self._tasks.items()):
            if task.done():
                del self._tasks[task]
            elif task.cancelling():  # cancelled, and still running
                if sweeps == _STOP_ATTEMPTS:
                    logger.error(_IGNORED, function, _STOP_ATTEMPTS)
                    del self._tasks[task]
                    continue
                if sweeps:  # it has had a sweep's time to end since it was first seen
                    task.cancel()
                self._tasks[task] = (function, sweeps + 1)
        if self._tasks:
            self._timer = asyncio.get_running_loop().call_later(_STOP_INTERVAL, self._sweep)


async def stop(task: asyncio.Task[Any], function: str) -> None:
    """Cancel ``task`` and wait for it to end, cancelling again while it swallows the
    CancelledError (a handler's bare ``except BaseException``), up to about ten seconds."""
    for _ in range(_STOP_ATTEMPTS):
        if task.done():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):  # the server insisting, too
            await asyncio.wait((task,), timeout=_STOP_INTERVAL)
    if not task.done():
        logger.error(_IGNORED, function, _STOP_ATTEMPTS)


async def send_coalesced(
    chunks: AsyncIterator[Any],
    write: Write,
    encoding: Encoding,
    function: str,
    *,
    max_batch: int,
    max_batch_bytes: int,
    max_chunk_bytes: int,
    sent: Sent,
) -> None:
    """Write the chunks, packing those produced while a write is in flight into one message.

    The handler runs in a producer task (so it can advance while a write is in flight); an
    error it raises reaches the caller after every chunk it produced before.
    """
    packer = _Packer(write, encoding, function, max_batch_bytes, max_chunk_bytes, sent)
    buffer: collections.deque[tuple[Any, int]] = collections.deque()  # payloads and sizes
    buffered = 0  # the buffer's size, in the byte bound's units
    have_chunks = asyncio.Event()
    have_room = asyncio.Event()
    have_room.set()
    finished = False
    failure: Exception | None = None

    async def produce() -> None:
        nonlocal buffered, finished, failure
        try:
            async for value in chunks:
                payload = packer.encode(value)
                buffer.append(payload)
                buffered += payload[1]
                have_chunks.set()
                if len(buffer) >= max_batch or buffered >= max_batch_bytes:
                    have_room.clear()
                    await have_room.wait()
        except Exception as error:  # delivered after the chunks before it
            failure = error
        finally:
            finished = True
            have_chunks.set()

    producer = asyncio.create_task(produce())
    try:
        while True:
            if not buffer:
                if finished:
                    break
                have_chunks.clear()
                await have_chunks.wait()
                continue
            payloads = list(buffer)
            buffer.clear()
            buffered = 0
            have_room.set()
            await packer.send(payloads)
        if failure is not None:
            raise failure
    finally:
        # The generator must not be running when the server closes it.
        await stop(producer, function)


class _Packer:
    """Encodes chunks as they come; writes runs of them in as few messages as the byte bound
    allows."""

    __slots__ = (
        "_encoded",
        "_encoding",
        "_function",
        "_max_bytes",
        "_max_chunk_bytes",
        "_sent",
        "_write",
    )

    def __init__(
        self,
        write: Write,
        encoding: Encoding,
        function: str,
        max_bytes: int,
        max_chunk_bytes: int,
        sent: Sent,
    ) -> None:
        self._sent = sent
        self._write = write
        self._encoding = encoding
        self._function = function
        self._max_bytes = max_bytes
        self._max_chunk_bytes = max_chunk_bytes
        self._encoded = 0  # chunks encoded: the next one's seq

    def encode(self, value: Any) -> tuple[Any, int]:
        """The chunk's payload and size; raises the error that ends the call if it cannot go."""
        try:
            payload, size = self._encode(value)
        except codec.UnencodableValue as error:
            raise unencodable(self._function, self._encoded, error) from None
        if size > self._max_chunk_bytes:
            raise too_large(self._function, self._encoded, size, self._max_chunk_bytes)
        self._encoded += 1
        return payload, size

    async def send(self, payloads: list[tuple[Any, int]]) -> None:
        pending: list[Any] = []
        size = 0
        for payload, payload_size in payloads:
            if pending and size + payload_size > self._max_bytes:
                await self._flush(pending)
                pending, size = [], 0
            pending.append(payload)
            size += payload_size
        await self._flush(pending)

    def _encode(self, value: Any) -> tuple[Any, int]:
        if self._encoding == "json":
            text = codec.encode_json(value)
            # Characters bound a batch (its bound allows 4 bytes each); bytes bound a chunk.
            size = len(text)
            if size * 4 > self._max_chunk_bytes:
                size = len(text.encode())
            return text, size
        encoded = codec.to_value(value)
        return encoded, encoded.ByteSize()

    async def _flush(self, payloads: list[Any]) -> None:
        if not payloads:
            return
        message = chunk_message(payloads, self._sent.chunks, self._encoding)
        try:
            await write_or_end(self._write, message)
        except asyncio.CancelledError:
            # grpc had the message before the cancel came: the caller may well have it.
            self._count(len(payloads))
            raise
        self._count(len(payloads))

    def _count(self, chunks: int) -> None:
        sent = self._sent
        if not sent.messages:
            sent.first_at = time.perf_counter()
        sent.messages += 1
        sent.chunks += chunks
