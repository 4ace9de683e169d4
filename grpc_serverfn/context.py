"""What a handler may ask about its call: metadata, peer, caller, deadline, cancellation, trailers.

A handler receives a ``Context`` by declaring a ``ctx`` parameter. It is safe to use from the
worker thread that runs a sync handler, so a blocking loop can stop when ``ctx.cancelled``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

    from .auth import Identity

__all__ = ["Context", "Metadata"]

MetadataValue = str | bytes


class Metadata(Mapping[str, MetadataValue]):
    """Read-only call metadata; ``metadata["key"]`` is the first value, ``get_all`` every one.

    Keys are lower-case, as gRPC sends them; binary values (keys ending in ``-bin``) are bytes.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, MetadataValue]] = ()) -> None:
        self._items = tuple(items)

    def __getitem__(self, key: str) -> MetadataValue:
        key = key.lower()
        for item_key, value in self._items:
            if item_key == key:
                return value
        raise KeyError(key)

    def get_all(self, key: str) -> list[MetadataValue]:
        """Every value sent under ``key``, in order."""
        key = key.lower()
        return [value for item_key, value in self._items if item_key == key]

    def pairs(self) -> tuple[tuple[str, MetadataValue], ...]:
        """Every ``(key, value)`` pair, in the order sent."""
        return self._items

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(key for key, _ in self._items))

    def __len__(self) -> int:
        return len(dict.fromkeys(key for key, _ in self._items))

    def __repr__(self) -> str:
        return f"Metadata({list(self._items)!r})"


class Context:
    """The call a handler is serving."""

    __slots__ = (
        "_cancelled",
        "_deadline",
        "_identify",
        "_identity",
        "_task",
        "_trailing_metadata",
        "function",
        "metadata",
        "peer",
    )

    def __init__(
        self,
        function: str,
        metadata: Metadata,
        peer: str,
        time_remaining: float | None,
        identify: Callable[[], Identity | None] | None = None,
        task: asyncio.Task[Any] | None = None,
    ) -> None:
        self.function = function
        """The name of the server function being called."""
        self.metadata = metadata
        """The caller's request metadata."""
        self.peer = peer
        """The caller's address, as gRPC reports it (e.g. ``ipv4:127.0.0.1:53124``)."""
        self._deadline = None if time_remaining is None else time.monotonic() + time_remaining
        # A plain flag, not a threading.Event: a worker thread only reads it, and each open
        # stream would carry the Event's lock and condition.
        self._cancelled = False
        self._trailing_metadata: list[tuple[str, MetadataValue]] | None = None
        self._identity: Identity | None = None
        # Looked up on first read only, so calls whose handlers never ask pay nothing for it.
        self._identify = identify
        # The call's task: once the transport cancels it (the caller cancelled or ran out of
        # time), the handler's own cleanup, which runs before the server hears of it, must
        # already read ``cancelled`` as True.
        self._task = task

    @property
    def identity(self) -> Identity | None:
        """Who is calling: the identity an auth middleware (``bearer_auth``) set, else, on a
        server that requires client certificates (mutual TLS), the certificate's subject;
        None when neither says."""
        identity = self._identity
        if identity is None and self._identify is not None:
            identify, self._identify = self._identify, None
            identity = self._identity = identify()
        return identity

    @identity.setter
    def identity(self, identity: Identity | None) -> None:
        self._identity = identity
        self._identify = None  # what a middleware established wins over the transport's

    def _detached(self) -> Context:
        """A context for work that outlives this call (a resumable stream's producer): the
        same caller and identity, no deadline, and cancelled only by itself."""
        detached = Context(self.function, self.metadata, self.peer, None)
        detached._identity = self.identity
        return detached

    def time_remaining(self) -> float | None:
        """Seconds left before the caller's deadline, or None when it set none."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    @property
    def cancelled(self) -> bool:
        """True once the caller has cancelled, gone away or run out of time (in a handler's
        ``finally`` too, to choose between commit and rollback)."""
        if self._cancelled:
            return True
        task = self._task
        if task is not None and task.cancelling():
            return True
        deadline = self._deadline
        return deadline is not None and time.monotonic() >= deadline

    def set_trailing_metadata(self, key: str, value: MetadataValue) -> None:
        """Add a trailer to send when the call ends (after the last chunk, or with its error)."""
        if self._trailing_metadata is None:
            self._trailing_metadata = []
        self._trailing_metadata.append((key.lower(), value))

    @property
    def trailing_metadata(self) -> tuple[tuple[str, MetadataValue], ...]:
        """The trailers set so far."""
        return tuple(self._trailing_metadata or ())

    def _mark_cancelled(self) -> None:
        self._cancelled = True
