"""Watching calls: one ``CallRecord`` per ``Invoke``, shown to every observer when the call
starts and again when it has ended, so metrics, traces and logs can be labelled by server
function (grpc's own per-method tooling only ever sees "Invoke").

An observer is any object with ``call_started(record)``, whose return value is handed back to
its ``call_ended(record, token)`` (a span, a timer). Both run in the call's own task, so a
context variable set in ``call_started`` (the current trace span) is seen by the handler.
With no observers the server skips all of this but the record itself.
"""

from __future__ import annotations

import itertools
import secrets
import time
from typing import Any, Protocol

import grpc
import grpc.aio

__all__ = ["UNKNOWN_FUNCTION", "CallRecord", "Observer", "Sent"]

UNKNOWN_FUNCTION = "(unknown)"
"""The function label of a call naming no registered function (no server function's name can
look like this, so label values stay bounded by the registry)."""

_PROCESS = secrets.token_hex(3)  # call ids are unique across processes and restarts
_NEXT = itertools.count(1).__next__


class Sent:
    """What the server has sent on a call: chunks, messages, and when the first went out."""

    __slots__ = ("chunks", "first_at", "messages")

    def __init__(self) -> None:
        self.chunks = 0
        self.messages = 0
        self.first_at: float | None = None  # time.perf_counter() after the first write


class CallRecord:
    """One call, as observers see it."""

    __slots__ = (
        "_peer",
        "call_id",
        "code",
        "context",
        "ended_at",
        "error_message",
        "function",
        "input",
        "resumed",
        "sent",
        "started_at",
    )

    def __init__(self, function: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.call_id = f"{_PROCESS}-{_NEXT():x}"
        """Unique per call; an INTERNAL error's message carries it, and so does its log."""
        self.function = function
        """The registered function's name, or UNKNOWN_FUNCTION."""
        self.context: grpc.aio.ServicerContext[Any, Any] | None = context
        """The grpc servicer context (metadata, peer) while the call runs; None after, since
        grpc frees it (use it in ``call_started`` and ``call_ended`` only)."""
        self._peer: str | None = None
        self.started_at = time.perf_counter()
        self.ended_at = 0.0
        self.code = grpc.StatusCode.OK
        self.error_message = ""
        self.sent = Sent()
        self.input: Any = None
        """The decoded input, once decoded (observers log it only when asked to)."""
        self.resumed = False
        """True for a call that resumed a resumable stream."""

    @property
    def cancelled(self) -> bool:
        """The caller cancelled or went away (or its deadline passed) before the end."""
        return self.code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED)

    @property
    def duration(self) -> float:
        """Seconds from the call's start to its end."""
        return self.ended_at - self.started_at

    @property
    def time_to_first_chunk(self) -> float | None:
        """Seconds from the call's start to its first chunk's write, or None without one."""
        first = self.sent.first_at
        return None if first is None else first - self.started_at

    @property
    def peer(self) -> str:
        """The caller's address, e.g. ``ipv4:127.0.0.1:53124`` (kept once read)."""
        if self._peer is None:
            self._peer = "" if self.context is None else str(self.context.peer())
        return self._peer


class Observer(Protocol):
    """Told when each call starts and ends; ``call_ended`` gets what ``call_started`` returned."""

    def call_started(self, record: CallRecord) -> Any: ...

    def call_ended(self, record: CallRecord, token: Any) -> None: ...
