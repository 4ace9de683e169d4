"""The baseline: a hand-written grpc.aio servicer for ``bench.v1.Bench`` with typed messages.

Its handlers are async generators yielding pre-encoded JSON, the least a Python grpc.aio
service can do to stream these chunks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc.aio

from ._proto.bench.v1 import bench_pb2, bench_pb2_grpc
from .workload import IDLE_SECONDS, TOKEN_TEXT, payload, wall_us

__all__ = ["BenchServicer", "start"]


class BenchServicer(bench_pb2_grpc.BenchServicer):
    """Streams ``count`` messages of pre-encoded JSON; ``Idle`` sends one and waits; ``Chat``
    paces its tokens (see ``workload``)."""

    async def Stream(  # noqa: N802 - the RPC's name
        self, request: bench_pb2.Req, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bench_pb2.Msg]:
        text = payload(request.size)
        for seq in range(request.count):
            yield bench_pb2.Msg(seq=seq, json=text)

    async def Idle(  # noqa: N802 - the RPC's name
        self, request: bench_pb2.Req, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bench_pb2.Msg]:
        yield bench_pb2.Msg(seq=0, json=payload(request.size))
        await asyncio.sleep(IDLE_SECONDS)

    async def Chat(  # noqa: N802 - the RPC's name
        self, request: bench_pb2.ChatReq, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bench_pb2.Token]:
        loop = asyncio.get_running_loop()
        start, wall, interval = loop.time(), wall_us(), request.interval_us
        for seq in range(request.tokens):
            wait = start + seq * interval / 1e6 - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            yield bench_pb2.Token(seq=seq, due_us=wall + seq * interval, text=TOKEN_TEXT)


async def start(host: str, port: int) -> tuple[grpc.aio.Server, int]:
    """Start the baseline server; returns it and the bound port."""
    server = grpc.aio.server()
    bench_pb2_grpc.add_BenchServicer_to_server(BenchServicer(), server)  # type: ignore[no-untyped-call]
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server, bound
