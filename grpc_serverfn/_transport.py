"""The contract between the call core (``_call.py``) and the transports that carry calls.

A transport adapter (``_grpc.py`` for grpc.aio, ``_web.py`` for Connect and gRPC-Web) parses
what arrived once, at its edge, into an ``Invocation``: plain, typed values that say nothing of
the protocol. It hands that to the core with a ``Transport``, the four things the core needs from
the connection: send the initial metadata, send one message (a chunk, or a batch of them), finish
with a status, and tell whether the caller is gone. The core never sees a request message or a
servicer context, so a transport needs no change to it (``tests/memory_transport.py`` drives
real calls without a socket).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .context import Metadata, MetadataValue
from .registry import NO_INPUT

if TYPE_CHECKING:
    import grpc

    from ._codec import Encoding
    from ._proto.serverfn.v1 import serverfn_pb2
    from .auth import Identity
    from .errors import ServerFnError

__all__ = [
    "CallEnded",
    "Ending",
    "InputKind",
    "Invocation",
    "ResumePoint",
    "Send",
    "Transport",
]

Send = Callable[["serverfn_pb2.Chunk"], Awaitable[None]]
"""Sends one message; returns once the transport has taken it (backpressure), raises once the
caller is gone."""

InputKind = Literal["none", "json", "value"]


class CallEnded(Exception):
    """The call was over (cancelled, deadline passed, connection lost) when a send was tried."""


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where a resume picks a resumable stream up: its id and the next chunk wanted."""

    stream_id: str
    next_seq: int


@dataclass(slots=True)
class Invocation:
    """One call as it arrived, parsed once at the transport's edge."""

    function: str
    """The function named by the caller ("" when a resume leaves it out)."""
    input: Any = NO_INPUT
    """The input as sent: JSON text (``input_kind`` "json"), data (``"value"``), or NO_INPUT."""
    input_kind: InputKind = "none"
    encoding: Encoding = "json"
    """The chunk encoding the caller asked for."""
    max_batch: int = 1
    """The most chunks the caller accepts in one message (1: one chunk per message)."""
    resume: ResumePoint | None = None
    metadata: Metadata = field(default_factory=Metadata)
    peer: str = ""
    time_remaining: float | None = None
    """Seconds left before the caller's deadline, as the call arrived; None without one."""
    identify: Callable[[], Identity | None] | None = None
    """Finds the caller's identity from the transport (a verified client certificate)."""
    unreadable: ServerFnError | None = None
    """Set when the request could not be read at all: the call is refused with it."""
    invalid: ServerFnError | None = None
    """Set when a field of the request is invalid (an unknown encoding): the call is refused
    with it once the function is known."""
    protocol: str = "grpc"
    """Which wire protocol carried the call (for observers)."""


@dataclass(frozen=True, slots=True)
class Ending:
    """How a call ends on the wire: its status code and message, and trailers (for an error,
    with the ``google.rpc.Status`` and its details under ``grpc-status-details-bin``)."""

    code: grpc.StatusCode
    message: str = ""
    trailers: Sequence[tuple[str, MetadataValue]] = ()


class Transport(Protocol):
    """What the core needs from the connection a call arrived on."""

    send: Send
    """Send one message (a chunk, or a batch of chunks)."""

    async def send_headers(self, headers: Sequence[tuple[str, str]]) -> None:
        """Send the initial metadata now (before the first message)."""

    async def finish(self, ending: Ending) -> None:
        """End the call with ``ending``'s status and trailers."""

    def caller_gone(self) -> bool:
        """True once the caller has cancelled, run out of time or lost the connection."""
