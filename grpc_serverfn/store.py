"""Stream stores: where resumable streams keep their chunks, so a caller can pick a stream up
again after a dropped connection, on this server or any other that shares the store.

A store holds, per stream: the function's name, who started it (its owner), the chunks as
JSON text in order, and how the stream ended (its status), all expiring ``retention`` seconds
after the last write; plus two leases, the producer's (its server is alive) and the readers'
(someone read recently), and a cancel request. ``MemoryStreamStore`` is the embedded default
(one process); ``grpc_serverfn.redis_store.RedisStreamStore`` shares streams between processes
and replicas.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "READ_LIMIT",
    "Heartbeat",
    "MemoryStreamStore",
    "StreamEnd",
    "StreamInfo",
    "StreamRead",
    "StreamStore",
]

READ_LIMIT = 1024
"""The most chunks one read returns (a long backlog is replayed in several reads)."""


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """How a stream ended: its gRPC status code (0 for OK), message, and the serialized
    ``google.rpc.Status`` with its details (empty when OK)."""

    code: int
    message: str = ""
    details: bytes = b""


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What a store knows of a stream besides its chunks."""

    function: str
    """The server function producing the stream."""
    owner: str = ""
    """The subject of the identity that started it ("" when the call had none): only the same
    identity may resume or cancel it."""


@dataclass(frozen=True, slots=True)
class StreamRead:
    """What a read found: the chunks from the asked position on, and the end when the stream
    ended right after them."""

    chunks: Sequence[str]
    end: StreamEnd | None = None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What the producer learns each time it renews its lease."""

    cancel_requested: bool
    """Someone called CancelStream for this stream."""
    reader_seen: bool
    """A reader renewed its lease within the idle TTL."""


class StreamStore(abc.ABC):
    """The storage behind resumable streams. Every method may be called concurrently."""

    @abc.abstractmethod
    async def create(
        self,
        stream_id: str,
        function: str,
        *,
        owner: str,
        retention: float,
        producer_ttl: float,
    ) -> None:
        """Record a new stream (no chunks yet) of ``function``, started by ``owner``, with its
        producer's lease taken."""

    @abc.abstractmethod
    async def append(self, stream_id: str, first_seq: int, chunks: Sequence[str]) -> None:
        """Store ``chunks`` as the stream's chunks ``first_seq``, ``first_seq + 1``, ..."""

    @abc.abstractmethod
    async def finish(self, stream_id: str, chunk_count: int, end: StreamEnd) -> None:
        """Record the stream's end, after its ``chunk_count`` chunks."""

    @abc.abstractmethod
    async def describe(self, stream_id: str) -> StreamInfo | None:
        """The stream's function and owner, or None when it is unknown or has expired."""

    @abc.abstractmethod
    async def read(self, stream_id: str, next_seq: int, *, wait: float) -> StreamRead | None:
        """The chunks from ``next_seq`` on, at most READ_LIMIT (waiting up to ``wait`` seconds
        for one when there are none yet), or None when the stream is unknown or has expired."""

    @abc.abstractmethod
    async def producer_heartbeat(self, stream_id: str, ttl: float) -> Heartbeat:
        """Renew the producer's lease for ``ttl`` seconds; report cancel requests and readers."""

    @abc.abstractmethod
    async def reader_heartbeat(self, stream_id: str, ttl: float) -> bool:
        """Renew the readers' lease for ``ttl`` seconds; True while the producer's lease holds."""

    @abc.abstractmethod
    async def request_cancel(self, stream_id: str) -> bool | None:
        """Ask the producer to stop: True when the stream was running, False when it had
        already ended, None when it is unknown or has expired."""

    async def aclose(self) -> None:  # noqa: B027 - most stores hold nothing to release
        """Release the store's connections (the server calls it when it stops)."""


@dataclass(slots=True)
class _Stream:
    info: StreamInfo
    retention: float
    expires_at: float
    chunks: list[str] = field(default_factory=list)
    end: StreamEnd | None = None
    producer_until: float = 0.0
    readers_until: float = 0.0
    cancel_requested: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def touch(self, now: float) -> None:
        self.expires_at = now + self.retention

    def notify(self) -> None:
        # Wake every reader waiting now; later readers wait on a fresh event.
        self.changed.set()
        self.changed = asyncio.Event()


class MemoryStreamStore(StreamStore):
    """Streams kept in this process's memory: resumable across dropped connections to this
    server, lost when it stops. Use it from the server's event loop only."""

    _SWEEP_INTERVAL = 1.0  # seconds between scans for expired streams

    def __init__(self) -> None:
        self._streams: dict[str, _Stream] = {}
        self._next_sweep = 0.0

    def __len__(self) -> int:
        """How many streams are held (expired ones are dropped at the next write)."""
        return len(self._streams)

    def _get(self, stream_id: str, now: float) -> _Stream | None:
        stream = self._streams.get(stream_id)
        if stream is not None and stream.expires_at <= now:
            del self._streams[stream_id]
            return None
        return stream

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._SWEEP_INTERVAL
        for stream_id in [key for key, stream in self._streams.items() if stream.expires_at <= now]:
            del self._streams[stream_id]

    async def create(
        self,
        stream_id: str,
        function: str,
        *,
        owner: str,
        retention: float,
        producer_ttl: float,
    ) -> None:
        now = time.monotonic()
        self._sweep(now)
        self._streams[stream_id] = _Stream(
            StreamInfo(function, owner),
            retention,
            now + retention,
            producer_until=now + producer_ttl,
        )

    async def append(self, stream_id: str, first_seq: int, chunks: Sequence[str]) -> None:
        now = time.monotonic()
        stream = self._get(stream_id, now)
        if stream is None:
            return  # expired while its producer ran: nobody can read it any more
        del stream.chunks[first_seq:]  # a retried append replaces rather than repeats
        stream.chunks.extend(chunks)
        stream.touch(now)
        stream.notify()

    async def finish(self, stream_id: str, chunk_count: int, end: StreamEnd) -> None:
        now = time.monotonic()
        stream = self._get(stream_id, now)
        if stream is None:
            return
        stream.end = end
        stream.touch(now)
        stream.notify()

    async def describe(self, stream_id: str) -> StreamInfo | None:
        stream = self._get(stream_id, time.monotonic())
        return None if stream is None else stream.info

    async def read(self, stream_id: str, next_seq: int, *, wait: float) -> StreamRead | None:
        stream = self._get(stream_id, time.monotonic())
        if stream is None:
            return None
        if next_seq >= len(stream.chunks) and stream.end is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stream.changed.wait(), wait)
            stream = self._get(stream_id, time.monotonic())
            if stream is None:
                return None
        chunks = stream.chunks[next_seq : next_seq + READ_LIMIT]
        at_end = next_seq + len(chunks) >= len(stream.chunks)
        return StreamRead(chunks, stream.end if at_end else None)

    async def producer_heartbeat(self, stream_id: str, ttl: float) -> Heartbeat:
        now = time.monotonic()
        stream = self._get(stream_id, now)
        if stream is None:
            return Heartbeat(cancel_requested=True, reader_seen=False)
        stream.producer_until = now + ttl
        return Heartbeat(stream.cancel_requested, stream.readers_until > now)

    async def reader_heartbeat(self, stream_id: str, ttl: float) -> bool:
        now = time.monotonic()
        stream = self._get(stream_id, now)
        if stream is None:
            return False
        stream.readers_until = now + ttl
        return stream.producer_until > now

    async def request_cancel(self, stream_id: str) -> bool | None:
        stream = self._get(stream_id, time.monotonic())
        if stream is None:
            return None
        if stream.end is not None:
            return False
        stream.cancel_requested = True
        return True
