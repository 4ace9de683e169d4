"""A TCP proxy on 127.0.0.1 for tests that cut connections: ``drop()`` closes every
connection through it at once (what a network failure or a dying load balancer does to a
call), and ``upstream`` can point new connections at another server.

Built on asyncio protocols rather than streams so that the proxy knows every socket it owns
from the moment it exists: ``stop()`` returns only after each one is closed, so none is
left for the garbage collector to warn about in a later test.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator


class _Side(asyncio.Protocol):
    """One end of a proxied connection: what it receives goes to its peer's transport."""

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.early = bytearray()  # received before the peer was connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.proxy._open.add(self)

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self.early += data

    def eof_received(self) -> bool:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()  # after what is buffered for it is written
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.proxy._open.discard(self)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    # The peer's socket is full: stop reading here until it drains (flow control end to end).
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class _Downstream(_Side):
    """The caller's connection: it opens a connection to the current upstream."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        if self.proxy._stopping:
            self.transport.abort()
            return
        self.proxy.connections += 1
        self.transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self._connect(self.proxy.upstream))
        self.proxy._connecting.add(task)
        task.add_done_callback(self.proxy._connecting.discard)

    async def _connect(self, upstream: str) -> None:
        assert self.transport is not None
        host, port = upstream.rsplit(":", 1)
        loop = asyncio.get_running_loop()
        try:
            _, upside = await loop.create_connection(lambda: _Side(self.proxy), host, int(port))
        except OSError:
            self.transport.abort()
            return
        if self.transport.is_closing():
            assert upside.transport is not None
            upside.transport.abort()
            return
        self.peer, upside.peer = upside, self
        assert upside.transport is not None
        if self.early:
            upside.transport.write(bytes(self.early))
            self.early.clear()
        self.transport.resume_reading()


class TcpProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.address = ""
        self.connections = 0  # accepted so far
        self._loop = asyncio.new_event_loop()
        self._open: set[_Side] = set()
        self._connecting: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            self._loop.create_server(lambda: _Downstream(self), "127.0.0.1", 0)
        )
        self.address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._close_everything(server))
        self._loop.close()

    async def _close_everything(self, server: asyncio.Server) -> None:
        # Callers reconnect while this runs and asyncio accepts in tasks of its own: repeat
        # until no socket of ours is open and no task is left, or give up after 10 s.
        self._stopping = True
        server.close()
        current = asyncio.current_task()
        for _ in range(1000):
            self._cut()
            for task in self._connecting:
                task.cancel()
            if not self._open and asyncio.all_tasks() == {current}:
                break
            await asyncio.sleep(0.01)
        await server.wait_closed()

    def _cut(self) -> None:
        for side in list(self._open):
            assert side.transport is not None
            side.transport.abort()

    def drop(self) -> None:
        """Cut every open connection (a reset, not a clean shutdown)."""
        self._loop.call_soon_threadsafe(self._cut)

    def start(self) -> TcpProxy:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(15)
        assert not self._thread.is_alive(), "the TCP proxy did not stop"


@contextlib.contextmanager
def proxy_to(upstream: str) -> Iterator[TcpProxy]:
    proxy = TcpProxy(upstream).start()
    try:
        yield proxy
    finally:
        proxy.stop()
