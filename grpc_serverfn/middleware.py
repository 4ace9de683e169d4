"""Middleware: async generators wrapped around every call, folded into one chain at start.

A middleware receives the ``Call`` and ``call_next``; it iterates what ``call_next(call)``
returns and yields each chunk on (changed or not), so it sees the stream as it passes and
never buffers it. Raising a ``ServerFnError`` before the first chunk rejects the call::

    @fns.middleware
    async def require_token(call: Call, call_next: CallNext) -> AsyncIterator[Any]:
        if call.ctx.metadata.get("authorization") != "Bearer s3cret":
            raise Unauthenticated("missing or wrong token")
        async for chunk in call_next(call):
            yield chunk

Middleware runs after the function is looked up (an unknown name is NOT_FOUND first) and
before the input is validated. For checks that must also cover ``ListFunctions``, use a
``grpc.aio.ServerInterceptor`` (``Server(interceptors=...)``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .context import Context
from .registry import ServerFunction

__all__ = ["Call", "CallNext", "Middleware", "build_chain", "close_opened", "close_quietly"]

logger = logging.getLogger("grpc_serverfn.server")


@dataclass(slots=True)
class Call:
    """One call on its way to a server function."""

    function: ServerFunction
    """The function being called."""
    input: Any
    """The decoded JSON input, not yet validated (``NO_INPUT`` when none was sent)."""
    ctx: Context
    """The call's context: metadata, peer, deadline, cancellation, trailers."""
    opened: list[AsyncIterator[Any]] = field(default_factory=list, repr=False)
    """Every stream opened for this call, so the server can close each one at the end."""


CallNext = Callable[[Call], AsyncIterator[Any]]


class Middleware(Protocol):
    """``async def mw(call, call_next)`` that yields the chunks of ``call_next(call)``."""

    def __call__(self, call: Call, call_next: CallNext, /) -> AsyncIterator[Any]: ...


def build_chain(middleware: Sequence[Middleware], endpoint: CallNext) -> CallNext:
    """Fold the middleware around ``endpoint`` once; the first middleware is the outermost.

    Every stream a link opens is recorded on the call: closing a middleware's generator does
    not close the stream it was iterating, so the server closes them all, innermost last.
    """
    chain = _tracked(endpoint)
    for link in reversed(middleware):
        chain = _tracked(_bind(link, chain))
    return chain


def _bind(link: Middleware, call_next: CallNext) -> CallNext:
    def call_link(call: Call) -> AsyncIterator[Any]:
        return link(call, call_next)

    return call_link


def _tracked(open_stream: CallNext) -> CallNext:
    def open_and_track(call: Call) -> AsyncIterator[Any]:
        stream = open_stream(call)
        call.opened.append(stream)
        return stream

    return open_and_track


async def close_opened(call: Call) -> None:
    """Close every stream opened for ``call``, outermost first (closing a middleware's
    generator leaves the stream it iterated open); a cleanup that raises is logged."""
    for stream in call.opened:
        await close_quietly(stream, call.function.name)


async def close_quietly(stream: AsyncIterator[Any], function: str) -> None:
    """Close ``stream`` (a handler's, or a middleware's) now, logging a cleanup that raises."""
    aclose = getattr(stream, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:
        logger.exception("cleanup of server function %r raised", function)
