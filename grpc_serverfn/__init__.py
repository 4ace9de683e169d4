"""grpc-serverfn: plain Python functions served as streaming gRPC services.

Decorate functions on a ``Registry``, serve it (``grpc-serverfn serve app:fns``), and call them
from ``Client`` / ``AsyncClient``, from stubs generated from ``protos/``, or from grpcurl.
"""

from ._client_core import ClientTLS, FunctionInfo, ResumePolicy
from ._version import __version__
from .auth import Identity, bearer_auth
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
    Unimplemented,
)
from .middleware import Call, CallNext, Middleware
from .registry import NO_INPUT, Kind, Registry, ServerFunction
from .server import Server, ServerTLS, serve
from .store import MemoryStreamStore, StreamStore

__all__ = [
    "NO_INPUT",
    "Aborted",
    "AlreadyExists",
    "AsyncChunkStream",
    "AsyncClient",
    "Call",
    "CallNext",
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
    "OutOfRange",
    "PermissionDenied",
    "Registry",
    "ResourceExhausted",
    "ResumePolicy",
    "Server",
    "ServerFnError",
    "ServerFunction",
    "ServerOptions",
    "ServerTLS",
    "StreamOptions",
    "StreamStore",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "__version__",
    "bearer_auth",
    "serve",
]
