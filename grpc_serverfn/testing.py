"""A real server on 127.0.0.1 and an ephemeral port, for tests: no mocks, a real channel.

::

    def test_stream_data():
        with run_in_thread(fns) as server, server.client() as client:
            assert list(client.invoke("stream_data"))[-1]["done"]

    async def test_stream_chat():
        async with run_in_loop(fns) as server, server.async_client() as client:
            chunks = [chunk async for chunk in client.invoke("stream_chat", {"message": "hi"})]

``run_in_thread`` serves from its own event loop in a background thread, so blocking ``Client``
code and any event loop of the test's can talk to it; ``run_in_loop`` serves from the running
loop. Both take ``Server``'s keywords (``ServerOptions``), e.g.
``run_in_thread(fns, limits=Limits(max_concurrent_calls=2))``, with test defaults: they bind
127.0.0.1 port 0 and read the port the server got (no racy port picking), and stop with a grace
period of one second on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any, Unpack

from .client import AsyncClient, Client
from .config import ServerOptions
from .registry import Registry
from .server import Server

__all__ = ["RunningServer", "run_in_loop", "run_in_thread"]


class RunningServer:
    """A started server and what a test needs to reach it."""

    def __init__(self, server: Server) -> None:
        self.server = server

    @property
    def target(self) -> str:
        """The address to dial, e.g. ``127.0.0.1:40123``."""
        return self.server.address

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def web_url(self) -> str:
        """The web port's base URL (served with ``web_port=0``), e.g. ``http://127.0.0.1:40124``."""
        return self.server.web_url

    def client(self, **options: Any) -> Client:
        """A blocking client connected to this server (close it, or use ``with``)."""
        return Client(self.target, **options)

    def async_client(self, **options: Any) -> AsyncClient:
        """An asyncio client connected to this server (use ``async with``)."""
        return AsyncClient(self.target, **options)


def _test_server(registry: Registry, options: ServerOptions) -> Server:
    """A ``Server`` with the test defaults (127.0.0.1, port 0, a one-second grace) under
    ``options``."""
    settings: ServerOptions = {"host": "127.0.0.1", "port": 0, "grace": 1.0}
    settings.update(options)
    return Server(registry, **settings)


@contextlib.contextmanager
def run_in_thread(registry: Registry, **options: Unpack[ServerOptions]) -> Iterator[RunningServer]:
    """Serve ``registry`` from a background thread for the duration of the ``with`` block."""
    server = _test_server(registry, options)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except BaseException as error:
            failure.append(error)
            started.set()
            return
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="serverfn-test-server", daemon=True)
    thread.start()
    started.wait()
    if failure:
        thread.join()
        loop.close()
        raise failure[0]
    try:
        yield RunningServer(server)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@contextlib.asynccontextmanager
async def run_in_loop(
    registry: Registry, **options: Unpack[ServerOptions]
) -> AsyncIterator[RunningServer]:
    """Serve ``registry`` from the running event loop for the duration of the ``async with``."""
    server = _test_server(registry, options)
    await server.start()
    try:
        yield RunningServer(server)
    finally:
        await server.stop()
