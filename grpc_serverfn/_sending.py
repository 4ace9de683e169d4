"""Sending a call's chunks: one encoder (with the size limit), one batch packer, one count of
what was sent, and the two ways of sending, one message per chunk or coalesced.

Every send waits until the transport has taken the message, so the chunk source (a handler, or
a resumable stream read back from its store) is advanced only as fast as the caller reads
(backpressure). When the caller opts in (``max_batch`` > 1), the source runs in a producer task
while a send is in flight, and the chunks it produced meanwhile go out together as one
``ChunkBatch`` message. A chunk is never held back waiting for company: when no send is in
flight, the next chunk is sent at once. The producer encodes each chunk as it comes and stops
when it is ``max_batch`` chunks, or a batch's byte bound, ahead of the sender, so that big
chunks pile up by bytes, not by count.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from . import _codec as codec
from ._proto.serverfn.v1 import serverfn_pb2
from ._transport import CallEnded, Send
from .errors import Internal, ResourceExhausted
from .observe import Sent

__all__ = [
    "ChunkEncoder",
    "Encoded",
    "Packer",
    "Stragglers",
    "message_limits",
    "send_coalesced",
    "send_each",
    "stop",
]

logger = logging.getLogger("grpc_serverfn.server")

Encoding = codec.Encoding

_STOP_INTERVAL = 0.25  # seconds between cancellations of a producer that ignores them
_STOP_ATTEMPTS = 40
_IGNORED = "server function %r ignored %d cancellations; leaving it running"


class Encoded:
    """A chunk already encoded as JSON text (read back from a stream store): sent as it is."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def message_limits(max_message_bytes: int) -> tuple[int, int]:
    """A server's bounds for one chunk (bytes, with room for the message's framing) and for a
    batch (characters: at up to 4 UTF-8 bytes each, a batch stays under the message limit)."""
    return max(1, max_message_bytes - 64), max(1, max_message_bytes // 4 - 1024)


class ChunkEncoder:
    """Turns a chunk into its payload (JSON text or a ``Value``) and measures it, refusing a
    value JSON cannot represent and a chunk over the size limit with the error that ends the
    call. The one place a chunk is encoded."""

    __slots__ = ("_function", "_json", "max_chunk_bytes")

    def __init__(self, encoding: Encoding, function: str, max_chunk_bytes: int) -> None:
        self._json = encoding == "json"
        self._function = function
        self.max_chunk_bytes = max_chunk_bytes

    def payload(self, value: Any, seq: int) -> tuple[Any, int]:
        """The chunk's payload and size: bytes, or for JSON text characters when short enough
        that 4 bytes each stay under the chunk limit (characters bound a batch)."""
        try:
            if self._json:
                text = value.text if type(value) is Encoded else codec.encode_json(value)
                size = len(text)
                if size * 4 > self.max_chunk_bytes:
                    size = len(text.encode())
                    if size > self.max_chunk_bytes:
                        raise self.too_large(seq, size)
                return text, size
            if type(value) is Encoded:
                value = codec.decode_json(value.text)
            encoded = codec.to_value(value)
        except codec.UnencodableValue as error:
            raise self.unencodable(seq, error) from None
        size = encoded.ByteSize()
        if size > self.max_chunk_bytes:
            raise self.too_large(seq, size)
        return encoded, size

    def message(self, value: Any, seq: int) -> serverfn_pb2.Chunk:
        """The one-chunk message for ``value``."""
        if self._json:
            # The per-chunk path: no tuple, no second call.
            try:
                text = value.text if type(value) is Encoded else codec.encode_json(value)
            except codec.UnencodableValue as error:
                raise self.unencodable(seq, error) from None
            if len(text) * 4 > self.max_chunk_bytes and (size := len(text.encode())) > (
                self.max_chunk_bytes
            ):
                raise self.too_large(seq, size)
            return serverfn_pb2.Chunk(json=text, seq=seq)
        chunk = serverfn_pb2.Chunk(seq=seq)
        if type(value) is Encoded:
            value = codec.decode_json(value.text)
        try:
            codec.fill_value(chunk.value, value)
        except codec.UnencodableValue as error:
            raise self.unencodable(seq, error) from None
        size = chunk.ByteSize()
        if size > self.max_chunk_bytes:
            raise self.too_large(seq, size)
        return chunk

    def batch(self, payloads: list[Any], seq: int) -> serverfn_pb2.Chunk:
        """The message for encoded payloads starting at ``seq``: one chunk, or a ChunkBatch."""
        if len(payloads) == 1:
            if self._json:
                return serverfn_pb2.Chunk(json=payloads[0], seq=seq)
            return serverfn_pb2.Chunk(value=payloads[0], seq=seq)
        if self._json:
            return serverfn_pb2.Chunk(seq=seq, batch=serverfn_pb2.ChunkBatch(json=payloads))
        return serverfn_pb2.Chunk(seq=seq, batch=serverfn_pb2.ChunkBatch(values=payloads))

    def too_large(self, seq: int, size: int) -> ResourceExhausted:
        """The error that ends a call whose handler produced a chunk over the size limit."""
        return ResourceExhausted(
            f"server function {self._function!r} produced chunk {seq} of {size} bytes, over the"
            f" server's limit of {self.max_chunk_bytes} bytes per chunk"
        )

    def unencodable(self, seq: int, error: codec.UnencodableValue) -> Internal:
        """The error that ends a call whose handler produced a value JSON cannot represent."""
        logger.error(
            "server function %r produced chunk %d of type %s, which cannot be encoded as JSON: %s",
            self._function,
            seq,
            error.type_name,
            error.reason,
        )
        return Internal(
            f"server function {self._function!r} produced a value of type {error.type_name!r}"
            f" that cannot be encoded as JSON ({error.reason})"
        )


async def send_each(
    chunks: AsyncIterator[Any],
    send: Send,
    encoder: ChunkEncoder,
    sent: Sent,
    first_seq: int = 0,
) -> None:
    """Send every chunk as its own message (what callers that did not opt in get), numbered
    from ``first_seq``, counting them in ``sent``."""
    message = encoder.message
    seq = first_seq
    # The per-chunk path: no allocation or call here that is not needed (the send's error
    # handling is inlined rather than wrapped in another coroutine).
    try:
        async for value in chunks:
            chunk = message(value, seq)
            try:
                await send(chunk)
            except asyncio.CancelledError:
                # The transport had the message before the cancel came: the caller may have it.
                seq += 1
                raise
            except Exception:
                raise CallEnded from None
            if seq == first_seq:
                sent.first_at = time.perf_counter()
            seq += 1
    finally:
        sent.chunks = sent.messages = seq - first_seq


class Stragglers:
    """Calls whose task runs on after it was cancelled.

    The transport cancels a call's task once (the caller cancelled, its deadline passed, the
    server is stopping); a handler that swallows that CancelledError (a bare ``except
    BaseException``) would run on. While calls are watched, one sweep every 0.25 s cancels
    again each task that was already cancelled and still running at the sweep before, for up to
    about ten seconds. Per call this costs a dictionary entry, not a task of its own (which cost
    each open stream about 1.9 KiB).

    The sweeps are paced by a ticker thread, not a loop timer: while any timer is scheduled,
    every idle turn of the event loop computes a timeout, which cost a stream sent flat out 4%
    of its instructions per chunk (``scripts/bench-instructions --workloads chunks``). The
    thread only posts the sweep to the loop; the sweep, on the loop, does all the work and
    ends the ticker after a while with nothing to watch.
    """

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[Any], tuple[str, int]] = {}  # function, sweeps seen
        self._ticker: _Ticker | None = None

    def watch(self, function: str) -> asyncio.Task[Any]:
        """Watch the current task (a call's); ``forget`` it when the call is over."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks[task] = (function, 0)
        ticker = self._ticker
        loop = task.get_loop()
        if ticker is None or ticker.loop is not loop:  # none yet, or one on a closed loop
            if ticker is not None:
                ticker.stop()
            self._ticker = _Ticker(loop, self._sweep)
        return task

    def forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)

    def _sweep(self) -> None:
        ticker = self._ticker
        if ticker is None:
            return
        if not self._tasks:
            ticker.idle_sweeps += 1
            if ticker.idle_sweeps >= _IDLE_SWEEPS:
                ticker.stop()
                self._ticker = None
            return
        ticker.idle_sweeps = 0
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


_IDLE_SWEEPS = 8
"""Sweeps with nothing to watch after which the ticker ends (a new call starts another)."""


class _Ticker:
    """A daemon thread that posts ``sweep`` to ``loop`` every 0.25 s until stopped or the loop
    is closed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sweep: Callable[[], None]) -> None:
        self.idle_sweeps = 0
        self._stopped = threading.Event()
        self.loop = loop
        self._sweep = sweep
        threading.Thread(target=self._run, name="serverfn-stragglers", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.wait(_STOP_INTERVAL):
            try:
                self.loop.call_soon_threadsafe(self._sweep)
            except RuntimeError:  # the loop is closed: nothing left to sweep
                return


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
    send: Send,
    encoder: ChunkEncoder,
    sent: Sent,
    *,
    max_batch: int,
    max_batch_bytes: int,
    function: str,
    first_seq: int = 0,
) -> None:
    """Send the chunks, packing those produced while a send is in flight into one message.

    The source runs in a producer task (so it can advance while a send is in flight); an
    error it raises reaches the caller after every chunk it produced before.
    """
    packer = Packer(send, encoder, sent, max_batch_bytes, first_seq)
    buffer: collections.deque[tuple[Any, int]] = collections.deque()  # payloads and sizes
    buffered = 0  # the buffer's size, in the byte bound's units
    have_chunks = asyncio.Event()
    have_room = asyncio.Event()
    have_room.set()
    finished = False
    failure: Exception | None = None

    async def produce() -> None:
        nonlocal buffered, finished, failure
        payload = encoder.payload
        seq = first_seq
        try:
            async for value in chunks:
                encoded = payload(value, seq)
                seq += 1
                buffer.append(encoded)
                buffered += encoded[1]
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


class Packer:
    """Sends runs of encoded chunks in as few messages as the byte bound allows, numbered from
    ``first_seq``, counting what went out in ``sent``."""

    __slots__ = ("_encoder", "_first_seq", "_max_bytes", "_send", "_sent")

    def __init__(
        self, send: Send, encoder: ChunkEncoder, sent: Sent, max_bytes: int, first_seq: int = 0
    ) -> None:
        self._send = send
        self._encoder = encoder
        self._sent = sent
        self._max_bytes = max_bytes
        self._first_seq = first_seq

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

    async def _flush(self, payloads: list[Any]) -> None:
        if not payloads:
            return
        sent = self._sent
        message = self._encoder.batch(payloads, self._first_seq + sent.chunks)
        try:
            await self._send(message)
        except asyncio.CancelledError:
            # The transport had the message before the cancel came: the caller may have it.
            sent.count(1, len(payloads))
            raise
        except Exception:
            raise CallEnded from None
        sent.count(1, len(payloads))
