"""The same service on grpclib (pure-Python HTTP/2) with betterproto's generated base class."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

from grpclib.server import Server

from ._betterproto.bench.v1 import BenchBase, ChatReq, Msg, Req, Token
from .workload import IDLE_SECONDS, TOKEN_TEXT, payload, wall_us

__all__ = ["BenchService", "start"]


class BenchService(BenchBase):
    """Streams ``count`` messages of pre-encoded JSON; ``idle`` sends one and waits; ``chat``
    paces its tokens (see ``workload``)."""

    async def stream(self, req: Req) -> AsyncIterator[Msg]:
        text = payload(req.size)
        for seq in range(req.count):
            yield Msg(seq=seq, json=text)

    async def idle(self, req: Req) -> AsyncIterator[Msg]:
        yield Msg(seq=0, json=payload(req.size))
        await asyncio.sleep(IDLE_SECONDS)

    async def chat(self, chat_req: ChatReq) -> AsyncIterator[Token]:
        loop = asyncio.get_running_loop()
        start, wall, interval = loop.time(), wall_us(), chat_req.interval_us
        for seq in range(chat_req.tokens):
            wait = start + seq * interval / 1e6 - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            yield Token(seq=seq, due_us=wall + seq * interval, text=TOKEN_TEXT)


async def start(host: str, port: int) -> tuple[Server, int]:
    """Start the grpclib server; returns it and the bound port."""
    # IPPROTO_TCP, not 0: grpclib (and asyncio) set TCP_NODELAY only on sockets that say so.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.bind((host, port))
    server = Server([BenchService()])
    await server.start(sock=listener)
    return server, int(listener.getsockname()[1])
