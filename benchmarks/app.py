"""The grpc-serverfn side: the benchmark's work as server functions on a Registry.

``stream`` is an async generator, ``stream_sync`` the same work as a sync generator (stepped in
a worker thread by the server), ``idle`` yields one chunk and then waits until cancelled,
``chat`` paces its tokens as the chat scenario's model does (see ``workload``).
The benchmark serves it with ``python -m benchmarks.serve serverfn`` (grpc_serverfn.Server on an
ephemeral port, printed when ready); by hand, from the repository root:
``grpc-serverfn serve benchmarks.app:fns --port 0`` (as a module: it imports its package).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

from pydantic import BaseModel

from grpc_serverfn import Registry

from .workload import CHUNK_BYTES, IDLE_SECONDS, TOKEN_TEXT, pad, wall_us

__all__ = ["ChatRequest", "StreamRequest", "chat", "fns", "idle", "stream", "stream_sync"]

fns = Registry()


class StreamRequest(BaseModel):
    """What to stream: ``count`` chunks of about ``size`` bytes of JSON."""

    count: int
    size: int = CHUNK_BYTES


@fns.server_fn
async def stream(data: StreamRequest) -> AsyncIterator[dict[str, Any]]:
    """Yield ``count`` chunks ``{"i": i, "pad": ...}`` of about ``size`` bytes each."""
    text = pad(data.size)
    for i in range(data.count):
        yield {"i": i, "pad": text}


@fns.server_fn
def stream_sync(data: StreamRequest) -> Iterator[dict[str, Any]]:
    """``stream`` as a sync generator."""
    text = pad(data.size)
    for i in range(data.count):
        yield {"i": i, "pad": text}


@fns.server_fn
async def idle() -> AsyncIterator[dict[str, Any]]:
    """Yield one chunk, then wait (an open, idle stream) until the caller cancels."""
    yield {"i": 0, "pad": pad(CHUNK_BYTES)}
    await asyncio.sleep(IDLE_SECONDS)


class ChatRequest(BaseModel):
    """How many tokens to stream, and how far apart (µs)."""

    tokens: int
    interval_us: int


@fns.server_fn
async def chat(data: ChatRequest) -> AsyncIterator[dict[str, Any]]:
    """Yield ``{"i": i, "due": due_us, "text": ...}`` for token i when it is due: ``i``
    intervals after the call started, on this server's clock (``due`` on the wall clock)."""
    loop = asyncio.get_running_loop()
    start, wall, interval = loop.time(), wall_us(), data.interval_us
    for i in range(data.tokens):
        wait = start + i * interval / 1e6 - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        yield {"i": i, "due": wall + i * interval, "text": TOKEN_TEXT}
