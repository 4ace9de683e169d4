"""How a server is configured: ``Limits``, ``StreamOptions`` and the ``ServerOptions`` keywords.

As httpx has ``Limits`` and ``Timeout``, related settings travel together in one small, frozen,
validated object, documented here once::

    Server(
        fns,
        port=0,
        limits=Limits(max_concurrent_calls=100, worker_threads=8),
        streams=StreamOptions(store=RedisStreamStore(url), retention=60.0),
    )

``ServerOptions`` names every keyword ``Server`` takes, so ``serve``, ``run_in_thread``,
``run_in_loop`` and the worker processes pass them through typed (``**Unpack[ServerOptions]``).
A bad value is refused where the object is made, with a ValueError naming the field.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, TypedDict

import grpc.aio

from .observe import Observer
from .store import StreamStore

if TYPE_CHECKING:
    from .server import ServerTLS  # server.py imports this module

__all__ = [
    "DEFAULT_IDLE_TTL",
    "DEFAULT_MAX_CONCURRENT_CALLS",
    "DEFAULT_MAX_INPUT_DEPTH",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_MAX_PENDING_CALLS",
    "DEFAULT_MAX_PENDING_SECONDS",
    "DEFAULT_RETENTION",
    "DEFAULT_WORKER_THREADS",
    "Limits",
    "ServerOptions",
    "StreamOptions",
]

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_CONCURRENT_CALLS = 10_000
DEFAULT_MAX_INPUT_DEPTH = 64
DEFAULT_WORKER_THREADS = 32
DEFAULT_MAX_PENDING_CALLS = 10_000
DEFAULT_MAX_PENDING_SECONDS = 300
DEFAULT_IDLE_TTL = 30.0
DEFAULT_RETENTION = 600.0


@dataclass(frozen=True, slots=True)
class Limits:
    """What one server takes on at most; each limit ends a call with a clear status.

    - ``max_message_bytes``: the largest request or chunk message, either way (grpc's receive
      and send limits); a larger chunk ends its call with RESOURCE_EXHAUSTED.
    - ``max_concurrent_calls``: calls beyond this many at once are refused with
      RESOURCE_EXHAUSTED, not queued (reason ``SERVER_AT_CAPACITY``: counted and logged; the
      clients make the call again, see ``RetryPolicy``).
    - ``max_input_depth``: the deepest nesting of an input's lists and objects; deeper is
      INVALID_ARGUMENT.
    - ``worker_threads``: the threads that run sync server functions (and step sync generators).
    - ``max_pending_calls``: calls grpc holds, received but not yet taken up by the server. The
      server takes up one call per turn of its event loop, so a burst of calls that arrive at
      once waits here, a few milliseconds each (about 10 KiB of memory a call). grpc cancels
      the calls beyond this many before the server sees them: the caller gets CANCELLED, which
      no metric or log line of the server counts (the clients make a GET function's call
      again). grpc's own default, 1,000 with random drops from there up to 3,000, cancelled
      150-220 calls of a burst of 2,000.
    - ``max_pending_seconds``: how long a call may wait there. grpc cancels a call that waited
      longer (CANCELLED again, unseen by the server); its own default, 30 s, cancelled 15-30% of
      5,000 streams started at once across four channels, whose last calls waited over 30 s to
      be taken up while the server sent the first ones' chunks. A caller's deadline still ends
      its wait earlier.
    """

    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_concurrent_calls: int = DEFAULT_MAX_CONCURRENT_CALLS
    max_input_depth: int = DEFAULT_MAX_INPUT_DEPTH
    worker_threads: int = DEFAULT_WORKER_THREADS
    max_pending_calls: int = DEFAULT_MAX_PENDING_CALLS
    max_pending_seconds: int = DEFAULT_MAX_PENDING_SECONDS

    def __post_init__(self) -> None:
        for field in fields(self):
            _require_positive_int(self, field.name)


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """Resumable streams (``@server_fn(resumable=True)``): where they are kept, and how long.

    - ``store``: where their chunks are kept; None for a ``MemoryStreamStore`` of this server's
      own. A ``RedisStreamStore`` shares them between processes and replicas.
    - ``idle_ttl``: seconds a stream's producer runs on with nobody reading; then it is stopped.
    - ``retention``: seconds a stream is kept after its last chunk.
    """

    store: StreamStore | None = None
    idle_ttl: float = DEFAULT_IDLE_TTL
    retention: float = DEFAULT_RETENTION

    def __post_init__(self) -> None:
        _require_positive_seconds(self, "idle_ttl")
        _require_positive_seconds(self, "retention")


class ServerOptions(TypedDict, total=False):
    """The keyword arguments of ``Server``, every one optional; ``serve``, ``run_in_thread``,
    ``run_in_loop`` and ``grpc-serverfn serve --workers`` pass them through unchanged."""

    host: str
    """The address to bind (default ``127.0.0.1``; ``0.0.0.0`` or ``::`` for every interface)."""
    port: int
    """The port to bind (default 50051); 0 for any free one, which ``Server.port`` then reads."""
    web_port: int | None
    """Also serve the functions to browsers, over Connect and gRPC-Web, on this port (same host;
    0 for any free one, which ``Server.web_port`` then reads); None (the default) for none.
    Needs ``pip install 'grpc-serverfn[web]'``."""
    cors_origins: Sequence[str]
    """Origins whose pages may call the web port from the browser (CORS), e.g.
    ``["https://app.example.com"]``; ``["*"]`` for any. None by default (same origin only)."""
    web_root: str | os.PathLike[str] | None
    """A directory whose files the web port serves at ``/`` (``index.html`` for a directory's
    path), beside the functions at ``/serverfn.v1.ServerFunctions/...``: a built UI and the
    functions it calls from one process. It must exist; needs ``web_port``. None by default."""
    tls: ServerTLS | None
    """Serve over TLS (mutual TLS when it has a ``client_ca``); None for plaintext. The web port
    serves TLS with the same certificate (HTTP/2 and HTTP/1.1 by ALPN; not mutual TLS)."""
    limits: Limits
    """Message size, concurrent and pending calls, input depth and worker threads (default
    ``Limits()``)."""
    streams: StreamOptions
    """The store and lifetimes of resumable streams (default ``StreamOptions()``)."""
    observers: Sequence[Observer]
    """Told of every call's start and end: ``CallLog``, ``PrometheusMetrics``, tracing."""
    reflection: bool
    """Offer gRPC server reflection (default True)."""
    grace: float
    """Seconds in-flight calls may take to finish at shutdown (default 10)."""
    interceptors: Sequence[grpc.aio.ServerInterceptor]
    """grpc.aio server interceptors, outside the registry's middleware."""
    grpc_options: Sequence[tuple[str, Any]]
    """grpc channel arguments for the server, e.g. ``("grpc.max_connection_age_ms", 300_000)``."""


def _require_positive_int(config: object, name: str) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"{type(config).__name__}.{name} must be a positive whole number, not {value!r}"
        )


def _require_positive_seconds(config: object, name: str) -> None:
    value = getattr(config, name)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (value > 0 and math.isfinite(value))
    ):
        raise ValueError(
            f"{type(config).__name__}.{name} must be a positive, finite number of seconds,"
            f" not {value!r}"
        )
