"""grpc-serverfn: plain Python functions served as streaming gRPC services.

Decorate functions on a ``Registry``, serve it (``grpc-serverfn serve app:fns``), and call them
from ``Client`` / ``AsyncClient``, from stubs generated from ``protos/``, or from grpcurl.

The path of a call through the server, one module a step::

    grpc.aio ─► _grpc.py        the transport: the request parsed once (_messages.py)
                  │              into an Invocation (_transport.py); browsers' Connect and
                  │              gRPC-Web calls come the same way through _web.py (web_port)
                  ▼
              _call.py          CallCore, the one driver: admit (limits, draining), look up,
                  │              decode, middleware (middleware.py), run the handler
                  │              (_concurrency.py), or a resumable producer (_resumable.py)
                  ▼
              _sending.py       encode each chunk, send one per message or coalesced
                  │
                  ▼
              _call.outcome()   every way a call ends -> its status; observers (observe.py)
                  │              are told its start and end
                  ▼
              Transport.finish  status and trailers back through the transport

``server.py`` owns the lifecycle around it (bind, health, drain, stop), for both ports; a
transport is an adapter onto the same ``CallCore``.
"""

from ._client_core import ClientTLS, FunctionInfo, ResumePolicy, RetryPolicy
from ._version import __version__
from .auth import Identity, bearer_auth
from .calllog import CallLog
from .client import AsyncChunkStream, AsyncClient, ChunkStream, Client
from .config import Limits, ServerOptions, StreamOptions
from .context import Context, Metadata
from .errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    ServerFnError,
    Unauthenticated,
    Unavailable,
    UnexpectedChunk,
    Unimplemented,
)
from .middleware import Call, CallNext, Middleware
from .observe import CallRecord, Observer
from .registry import NO_INPUT, Kind, Registry, ServerFunction
from .server import Server, ServerTLS, serve
from .store import MemoryStreamStore, StreamStore
from .typed import ServerFn, ServerFnRef

__all__ = [
    "NO_INPUT",
    "Aborted",
    "AlreadyExists",
    "AsyncChunkStream",
    "AsyncClient",
    "Call",
    "CallLog",
    "CallNext",
    "CallRecord",
    "Cancelled",
    "ChunkStream",
    "Client",
    "ClientTLS",
    "Context",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FunctionInfo",
    "Identity",
    "Internal",
    "InvalidArgument",
    "Kind",
    "Limits",
    "MemoryStreamStore",
    "Metadata",
    "Middleware",
    "NotFound",
    "Observer",
    "OutOfRange",
    "PermissionDenied",
    "Registry",
    "ResourceExhausted",
    "ResumePolicy",
    "RetryPolicy",
    "Server",
    "ServerFn",
    "ServerFnError",
    "ServerFnRef",
    "ServerFunction",
    "ServerOptions",
    "ServerTLS",
    "StreamOptions",
    "StreamStore",
    "Unauthenticated",
    "Unavailable",
    "UnexpectedChunk",
    "Unimplemented",
    "__version__",
    "bearer_auth",
    "serve",
]
