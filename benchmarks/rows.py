"""The rows of the benchmark: which server each one calls, and how.

``baseline`` is the row every ratio is taken against. The ``coalesce`` rows pass
``coalesce=True`` / ``coalesce=False`` to grpc-serverfn's clients. The ``web`` rows call the
same server's web port with Connect over one HTTP/2 connection (``WebConnectDriver``).

The chat scenario has rows of its own (``CHAT_ROWS``): the same ways of calling, each driver's
``chat``, plus grpc-serverfn with ``WORKERS`` worker processes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .drivers import (
    Driver,
    GrpcAioDriver,
    GrpclibDriver,
    ServerfnAsyncDriver,
    ServerfnStubDriver,
    ServerfnSyncDriver,
    WebConnectDriver,
)
from .serve import WORKERS, WORKERS_KIND
from .servers import Address, ServerProcess

__all__ = ["BASELINE", "CHAT_ROWS", "IDLE_DRIVERS", "ROWS", "SERVER_LABELS", "RowSpec"]

BASELINE = "baseline"


@dataclass(frozen=True, slots=True)
class RowSpec:
    """One way of streaming the same chunks."""

    key: str
    label: str
    server: str
    """The server kind it calls (``benchmarks.serve``'s KINDS)."""
    make: Callable[[Address], Driver]
    concurrent: bool = True
    """Whether it takes part in the concurrent-streams scenario (asyncio clients only)."""
    versus: str | None = None
    """The row this one is compared with round by round (see ``report.paired``)."""
    channels: int = 1
    """The chat scenario: connections per client process, at the least."""


ROWS: tuple[RowSpec, ...] = (
    RowSpec(
        BASELINE,
        "baseline: grpc.aio servicer, typed stub",
        "baseline",
        lambda server: GrpcAioDriver(server.address),
    ),
    RowSpec(
        "serverfn-async",
        "serverfn async gen, AsyncClient, coalesce off",
        "serverfn",
        lambda server: ServerfnAsyncDriver(server.address, "stream", coalesce=False),
    ),
    RowSpec(
        "serverfn-stub",
        "serverfn async gen, grpc.aio stub from protos/",
        "serverfn",
        lambda server: ServerfnStubDriver(server.address, "stream"),
        versus=BASELINE,
    ),
    RowSpec(
        "serverfn-async-coalesce",
        "serverfn async gen, AsyncClient, coalesce on",
        "serverfn",
        lambda server: ServerfnAsyncDriver(server.address, "stream", coalesce=True),
    ),
    RowSpec(
        "serverfn-observed",
        "serverfn async gen, AsyncClient, coalesce off, metrics+traces+logs",
        "serverfn-observed",
        lambda server: ServerfnAsyncDriver(server.address, "stream", coalesce=False),
        versus="serverfn-async",
    ),
    RowSpec(
        "serverfn-observed-coalesce",
        "serverfn async gen, AsyncClient, coalesce on, metrics+traces+logs",
        "serverfn-observed",
        lambda server: ServerfnAsyncDriver(server.address, "stream", coalesce=True),
        versus="serverfn-async-coalesce",
    ),
    RowSpec(
        "serverfn-sync-client",
        "serverfn async gen, Client (sync), coalesce off",
        "serverfn",
        lambda server: ServerfnSyncDriver(server.address, "stream", coalesce=False),
        concurrent=False,
    ),
    RowSpec(
        "serverfn-sync-client-coalesce",
        "serverfn async gen, Client (sync), coalesce on",
        "serverfn",
        lambda server: ServerfnSyncDriver(server.address, "stream", coalesce=True),
        concurrent=False,
    ),
    RowSpec(
        "serverfn-sync-gen",
        "serverfn sync gen, AsyncClient, coalesce off",
        "serverfn",
        lambda server: ServerfnAsyncDriver(server.address, "stream_sync", coalesce=False),
    ),
    RowSpec(
        "web-connect",
        "serverfn web port, Connect over HTTP/2, coalesce off",
        "serverfn",
        lambda server: WebConnectDriver(server.web_url, "stream", coalesce=False),
        versus="serverfn-async",
    ),
    RowSpec(
        "web-connect-coalesce",
        "serverfn web port, Connect over HTTP/2, coalesce on",
        "serverfn",
        lambda server: WebConnectDriver(server.web_url, "stream", coalesce=True),
        versus="serverfn-async-coalesce",
    ),
    RowSpec(
        "grpclib",
        "grpclib server, grpclib client",
        "grpclib",
        lambda server: GrpclibDriver(server.port),
    ),
)

_CHAT_KEYS = (
    BASELINE,
    "serverfn-stub",
    "serverfn-async",
    "serverfn-async-coalesce",
    "web-connect",
    "grpclib",
)

CHAT_ROWS: tuple[RowSpec, ...] = (
    # The same ways of calling as the other scenarios (a driver's ``chat`` calls the chat
    # function or RPC whatever function the row streams from elsewhere) ...
    *(spec for key in _CHAT_KEYS for spec in ROWS if spec.key == key),
    # ... and grpc-serverfn served by worker processes.
    RowSpec(
        "serverfn-workers",
        f"serverfn --workers {WORKERS}, AsyncClient, coalesce off",
        WORKERS_KIND,
        lambda server: ServerfnAsyncDriver(server.address, "chat", coalesce=False),
        # The kernel spreads connections, not calls, over the workers: enough of them that
        # each worker gets about its share.
        channels=4,
    ),
)
"""The chat scenario's rows: each calls ``chat`` on a fresh server of its kind."""

SERVER_LABELS: dict[str, str] = {
    "baseline": "baseline: grpc.aio servicer",
    "serverfn": "grpc-serverfn Server",
    "serverfn-observed": "grpc-serverfn Server, metrics+traces+logs",
    "grpclib": "grpclib server",
}
"""The rows of the per-server figures (memory), keyed by server kind."""

IDLE_DRIVERS: dict[str, Callable[[ServerProcess], Driver]] = {
    "baseline": lambda server: GrpcAioDriver(server.address),
    "serverfn": lambda server: ServerfnAsyncDriver(server.address, "idle", coalesce=False),
    "serverfn-observed": lambda server: ServerfnAsyncDriver(server.address, "idle", coalesce=False),
    "grpclib": lambda server: GrpclibDriver(server.port),
}
"""How the idle-streams scenario opens streams on each server."""
