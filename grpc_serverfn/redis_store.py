"""A stream store on Redis Streams, shared by every server process and replica that points at
the same Redis: a stream started on one can be resumed, read or cancelled on any other.

Per stream, under ``{prefix}{<stream id>}:`` (one hash slot, so it works on Redis Cluster):
``chunks``, a Redis stream whose entry ``0-<n>`` is chunk ``n - 1`` (field ``c``, JSON text)
and whose last entry, once the stream ended, holds its status (fields ``end``, ``message``,
``details``); ``meta``, a hash (``function``, ``owner``, ``ended``, ``cancel``); and two lease keys,
``producer`` and ``readers``, that expire unless renewed. Every key expires ``retention``
seconds after the stream's last write. Needs the ``redis`` extra (redis-py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio

from .store import READ_LIMIT, Heartbeat, StreamEnd, StreamInfo, StreamRead, StreamStore

__all__ = ["RedisStreamStore"]


class RedisStreamStore(StreamStore):
    """Resumable streams in Redis (``redis://host:port/db``, ``rediss://`` for TLS). For Redis
    Cluster, pass ``client=redis.asyncio.RedisCluster.from_url(url)``: each stream's keys
    share one hash slot."""

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        prefix: str = "serverfn:",
        client: redis.asyncio.Redis | redis.asyncio.RedisCluster | None = None,
    ) -> None:
        # Blocking reads each hold a connection while they wait; the pool grows as needed.
        self._redis = client if client is not None else redis.asyncio.Redis.from_url(url)
        self._prefix = prefix
        self._retention: dict[str, int] = {}  # ms, for the streams this process produces
        self.url = url

    def _key(self, stream_id: str, part: str) -> str:
        return f"{self._prefix}{{{stream_id}}}:{part}"

    async def create(
        self,
        stream_id: str,
        function: str,
        *,
        owner: str,
        retention: float,
        producer_ttl: float,
    ) -> None:
        retention_ms = max(1, int(retention * 1000))
        self._retention[stream_id] = retention_ms
        meta = self._key(stream_id, "meta")
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key(stream_id, "chunks"), meta)
            pipe.hset(meta, mapping={"function": function, "owner": owner, "ended": 0, "cancel": 0})
            pipe.pexpire(meta, retention_ms)
            pipe.set(self._key(stream_id, "producer"), 1, px=max(1, int(producer_ttl * 1000)))
            await pipe.execute()

    async def append(self, stream_id: str, first_seq: int, chunks: Sequence[str]) -> None:
        key = self._key(stream_id, "chunks")
        retention_ms = self._retention.get(stream_id, 60_000)
        async with self._redis.pipeline(transaction=False) as pipe:
            for offset, chunk in enumerate(chunks):
                pipe.xadd(key, {"c": chunk}, id=f"0-{first_seq + offset + 1}")
            pipe.pexpire(key, retention_ms)
            pipe.pexpire(self._key(stream_id, "meta"), retention_ms)
            await pipe.execute()

    async def finish(self, stream_id: str, chunk_count: int, end: StreamEnd) -> None:
        key = self._key(stream_id, "chunks")
        meta = self._key(stream_id, "meta")
        retention_ms = self._retention.pop(stream_id, 60_000)
        fields: dict[Any, Any] = {"end": end.code, "message": end.message, "details": end.details}
        # After the last stored chunk: a producer cancelled while an append was in flight may
        # have stored one more chunk than it counted.
        last: Any = await self._redis.xrevrange(key, count=1)
        if last:
            chunk_count = max(chunk_count, int(bytes(last[0][0]).split(b"-")[1]))
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xadd(key, fields, id=f"0-{chunk_count + 1}")
            pipe.hset(meta, "ended", 1)
            pipe.pexpire(key, retention_ms)
            pipe.pexpire(meta, retention_ms)
            pipe.delete(self._key(stream_id, "producer"))
            await pipe.execute()

    async def describe(self, stream_id: str) -> StreamInfo | None:
        function, owner = await self._redis.hmget(
            self._key(stream_id, "meta"), ["function", "owner"]
        )
        if function is None:
            return None
        return StreamInfo(_text(function), _text(owner or b""))

    async def read(self, stream_id: str, next_seq: int, *, wait: float) -> StreamRead | None:
        key = self._key(stream_id, "chunks")
        # Entry 0-n is chunk n - 1, and XREAD returns the entries after the id it is given.
        found: Any = await self._redis.xread(
            {key: f"0-{next_seq}"}, count=READ_LIMIT, block=max(1, int(wait * 1000))
        )
        if not found:
            if not await self._redis.exists(self._key(stream_id, "meta")):
                return None
            return StreamRead(())
        chunks: list[str] = []
        end: StreamEnd | None = None
        entries: list[tuple[bytes, dict[bytes, bytes]]] = found[0][1]
        for _entry_id, fields in entries:
            chunk = fields.get(b"c")
            if chunk is not None:
                chunks.append(chunk.decode())
                continue
            message = fields.get(b"message", b"").decode()
            end = StreamEnd(int(fields[b"end"]), message, fields.get(b"details", b""))
        return StreamRead(chunks, end)

    async def producer_heartbeat(self, stream_id: str, ttl: float) -> Heartbeat:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(self._key(stream_id, "producer"), 1, px=max(1, int(ttl * 1000)))
            pipe.hget(self._key(stream_id, "meta"), "cancel")
            pipe.exists(self._key(stream_id, "readers"))
            _, cancel, readers = await pipe.execute()
        # A stream whose record expired has nobody to produce for: stop it as if cancelled.
        return Heartbeat(
            cancel_requested=cancel is None or cancel == b"1", reader_seen=bool(readers)
        )

    async def reader_heartbeat(self, stream_id: str, ttl: float) -> bool:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(self._key(stream_id, "readers"), 1, px=max(1, int(ttl * 1000)))
            pipe.exists(self._key(stream_id, "producer"))
            _, producer = await pipe.execute()
        return bool(producer)

    async def request_cancel(self, stream_id: str) -> bool | None:
        meta = self._key(stream_id, "meta")
        function, ended = await self._redis.hmget(meta, ["function", "ended"])
        if function is None:
            return None
        if ended == b"1":
            return False
        await self._redis.hset(meta, "cancel", 1)
        return True

    async def aclose(self) -> None:
        await self._redis.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
