"""The call core: one driver for every call, whatever transport carried it.

``CallCore.invoke`` owns a call from admission to its last byte::

    Invocation (parsed at the edge) ─► admit: draining? readable? function known? room?
        ─► decode and check the input ─► Call(function, input, Context)
        ─► middleware chain ─► endpoint: the handler, run here;
                                or, for a resumable function, a producer started detached
                                and the stream read back from its store (a resume reads only)
        ─► send: one chunk per message, or coalesced ─► outcome() ─► Transport.finish

``outcome`` is the one place where every way a call can end (returned, raised a
``ServerFnError``, raised anything else, cancelled, deadline passed, caller gone) becomes the
status the caller gets and the code the observers record. Observers start and end here, their
own failures included. Nothing here knows grpc.aio: a transport is the ``Transport`` protocol.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Executor
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from . import _codec as codec
from ._concurrency import open_handler
from ._resumable import ResumableStreams, unexpected_error, unknown_stream
from ._sending import ChunkEncoder, Stragglers, message_limits, send_coalesced, send_each
from ._transport import CallEnded, Ending, Invocation, ResumePoint, Transport
from ._wire import (
    ERROR_DOMAIN,
    MAX_BATCH,
    SERVER_AT_CAPACITY,
    SERVER_SHUTTING_DOWN,
    STREAM_ID_METADATA_KEY,
)
from .config import Limits, StreamOptions
from .context import Context, MetadataValue
from .errors import InvalidArgument, NotFound, ResourceExhausted, ServerFnError, Unavailable, echoed
from .middleware import Call, CallNext, build_chain, close_opened
from .observe import UNKNOWN_FUNCTION, CallRecord, Observer
from .registry import NO_INPUT, Registry, ServerFunction
from .store import StreamInfo

__all__ = ["CallCore", "ending_of", "outcome"]

logger = logging.getLogger("grpc_serverfn.server")

_SHUTTING_DOWN = Unavailable(
    "the server is shutting down; retry on another server or later",
    details=[error_details_pb2.ErrorInfo(reason=SERVER_SHUTTING_DOWN, domain=ERROR_DOMAIN)],
)
_OK = Ending(grpc.StatusCode.OK)
# A refused call's RetryInfo: long enough for a burst's running calls to make room.
_RETRY_AT_CAPACITY = duration_pb2.Duration(nanos=100_000_000)
REFUSAL_LOG_SECONDS = 10.0
"""At most one log line per reason this often, however many calls are refused."""


class CallCore:
    """Serves a frozen Registry's calls, whatever transport carries them."""

    def __init__(
        self,
        registry: Registry,
        *,
        limits: Limits = Limits(),
        streams: StreamOptions = StreamOptions(),
        observers: Sequence[Observer] = (),
        executor: Executor | None = None,
    ) -> None:
        registry.freeze()
        self.registry = registry
        self._observers = tuple(observers)
        self._executor = executor
        self._max_concurrent_calls = limits.max_concurrent_calls
        self._max_input_depth = limits.max_input_depth
        self._max_chunk_bytes, self._max_batch_bytes = message_limits(limits.max_message_bytes)
        self.streams = ResumableStreams(streams, max_chunk_bytes=self._max_chunk_bytes)
        self._middlewares = registry.middlewares
        self._chain = build_chain(self._middlewares, self._run_handler)
        self._at_capacity = ResourceExhausted(
            f"the server is serving its limit of {limits.max_concurrent_calls} concurrent"
            " calls; retry later",
            details=[
                error_details_pb2.ErrorInfo(
                    reason=SERVER_AT_CAPACITY,
                    domain=ERROR_DOMAIN,
                    metadata={"max_concurrent_calls": str(limits.max_concurrent_calls)},
                ),
                error_details_pb2.RetryInfo(retry_delay=_RETRY_AT_CAPACITY),
            ],
        )
        self._refusal_logs = {
            SERVER_AT_CAPACITY: _RefusalLog(
                logging.WARNING,
                f"the server is serving its limit of {limits.max_concurrent_calls} concurrent"
                " calls (RESOURCE_EXHAUSTED; Limits.max_concurrent_calls,"
                " serve --max-concurrent-calls)",
            ),
            SERVER_SHUTTING_DOWN: _RefusalLog(
                logging.INFO, "the server is shutting down (UNAVAILABLE)"
            ),
        }
        self._in_flight = 0
        self._stragglers = Stragglers()
        self._idle = asyncio.Event()
        self._idle.set()
        self._draining = False

    # --- lifecycle ---------------------------------------------------------------------

    def start_draining(self) -> None:
        """Refuse every new call from now on with UNAVAILABLE (the server is shutting down)."""
        self._draining = True

    async def wait_until_idle(self) -> None:
        """Wait until every call has ended, its cleanup included."""
        await self._idle.wait()

    def flush_log(self) -> None:
        """Log the refusals not logged yet (the server has stopped)."""
        for log in self._refusal_logs.values():
            log.flush()

    # --- a call ----------------------------------------------------------------------------

    async def invoke(self, invocation: Invocation, transport: Transport) -> None:
        """Serve one call to its end (re-raising the cancellation of its task).

        One coroutine from admission to the end, on purpose: a call is short, and every
        coroutine more per call shows in the cost of one (scripts/bench-instructions)."""
        function: ServerFunction | None = None
        stream: StreamInfo | None = None
        lookup_failed: ServerFnError | None = None
        if invocation.unreadable is None:
            function = self.registry.get(invocation.function)
            resume = invocation.resume
            if resume is not None and not invocation.function:
                # A resume may leave the function out: the stream's own labels and runs it.
                try:
                    stream = await self.streams.describe(resume.stream_id)
                except ServerFnError as error:
                    lookup_failed = error
                if stream is not None:
                    function = self.registry.get(stream.function)
        record = CallRecord(
            UNKNOWN_FUNCTION if function is None else function.name,
            invocation.metadata,
            invocation.peer,
            invocation.protocol,
        )
        started = self._start_observers(record) if self._observers else ()
        try:
            # The refusals, checked in one go on the way of a call that has none.
            refusal = (
                None
                if function is not None
                and self._in_flight < self._max_concurrent_calls
                and not self._draining
                else self._refusal(invocation, function, lookup_failed, record)
            )
            if refusal is not None or function is None:
                ending = _ending(record, *outcome(refusal, None, record), ())
                if ending is not None:
                    await transport.finish(ending)
                return
            self._in_flight += 1
            self._idle.clear()
            ctx = _context_for(function, invocation)
            call: Call | None = None
            raised: BaseException | None = None
            name = function.name
            try:
                resume = invocation.resume
                if invocation.invalid is not None:
                    raise invocation.invalid
                if resume is not None:
                    record.resumed = True
                    call = Call(function, NO_INPUT, ctx)
                    chain = self._resume_chain(invocation, resume, stream, transport)
                    first_seq = resume.next_seq
                else:
                    record.input = data = self._decode_input(invocation)
                    call = Call(function, data, ctx)
                    chain = (
                        self._start_chain(transport, record) if function.resumable else self._chain
                    )
                    first_seq = 0
                encoder = ChunkEncoder(invocation.encoding, name, self._max_chunk_bytes)
                max_batch = min(invocation.max_batch, MAX_BATCH)
                if max_batch > 1:
                    await send_coalesced(
                        chain(call),
                        transport.send,
                        encoder,
                        record.sent,
                        max_batch=max_batch,
                        max_batch_bytes=self._max_batch_bytes,
                        function=name,
                        first_seq=first_seq,
                    )
                else:
                    task = self._stragglers.watch(name)
                    try:
                        await send_each(
                            chain(call), transport.send, encoder, record.sent, first_seq
                        )
                    finally:
                        self._stragglers.forget(task)
            except BaseException as error:
                raised = error
            finally:
                try:
                    code, refusal = outcome(raised, ctx, record)
                    if call is not None:
                        await close_opened(call)
                    ending = _ending(record, code, refusal, ctx.trailing_metadata)
                    if ending is not None:
                        await transport.finish(ending)
                finally:
                    self._in_flight -= 1
                    if not self._in_flight:
                        self._idle.set()
            if isinstance(raised, asyncio.CancelledError):
                raise raised
        finally:
            record.ended_at = time.perf_counter()
            for observer, token in started:
                try:
                    observer.call_ended(record, token)
                except Exception:
                    logger.exception(
                        "observer %r failed at the end of call %s", observer, record.call_id
                    )

    def _start_observers(self, record: CallRecord) -> list[tuple[Observer, Any]]:
        started = []
        for observer in self._observers:
            try:
                started.append((observer, observer.call_started(record)))
            except Exception:
                # The call goes on; this observer, which did not start, is not told its end.
                logger.exception(
                    "observer %r failed at the start of call %s", observer, record.call_id
                )
        return started

    def _refusal(
        self,
        invocation: Invocation,
        function: ServerFunction | None,
        lookup_failed: ServerFnError | None,
        record: CallRecord,
    ) -> ServerFnError | None:
        """Why the call is not admitted, or None. A call refused before it could run (at
        capacity, shutting down) is counted and logged as refused."""
        if self._draining:
            self._refused(record, SERVER_SHUTTING_DOWN)
            return _SHUTTING_DOWN
        if invocation.unreadable is not None:
            return invocation.unreadable
        if function is None:
            if lookup_failed is not None:
                return lookup_failed
            if invocation.resume is not None and not invocation.function:
                return unknown_stream(invocation.resume.stream_id)
            return _unknown_function(invocation.function)
        if self._in_flight >= self._max_concurrent_calls:
            # Refused at once rather than queued (grpc's maximum_concurrent_rpcs queues).
            self._refused(record, SERVER_AT_CAPACITY)
            return self._at_capacity
        return None

    def _refused(self, record: CallRecord, reason: str) -> None:
        record.refused = reason
        self._refusal_logs[reason].note()

    def _decode_input(self, invocation: Invocation) -> Any:
        kind = invocation.input_kind
        if kind == "none":
            return NO_INPUT
        limit = self._max_input_depth
        if kind == "json":
            text = invocation.input
            try:
                data = codec.decode_json(text)
            except codec.JSONDecodeError as error:
                where = f"line {error.lineno} column {error.colno} (char {error.pos})"
                raise InvalidArgument(
                    f"malformed JSON input: {error.msg} at {where}",
                    field_violations=[("json", f"{error.msg} at {where}")],
                ) from None
            # JSON nests no deeper than it has opening brackets: most inputs need no walk.
            deep = text.count("{") + text.count("[") > limit and codec.deeper_than(data, limit)
        else:
            data = invocation.input
            deep = codec.deeper_than(data, limit)
        if deep:
            raise InvalidArgument(
                f"the input nests deeper than the server's limit of {self._max_input_depth} levels",
                field_violations=[(kind, f"nested deeper than {self._max_input_depth} levels")],
            )
        return data

    # --- the endpoints under the middleware ------------------------------------------------

    def _run_handler(self, call: Call) -> AsyncIterator[Any]:
        arguments = call.function.arguments(call.input, call.ctx)
        return open_handler(call.function, arguments, self._executor)

    def _start_chain(self, transport: Transport, record: CallRecord) -> CallNext:
        """A new resumable stream: the handler runs detached, the call reads it back."""

        async def start_and_read(call: Call) -> AsyncIterator[Any]:
            # The producer outlives this call: its context is not this call's.
            producer_ctx = call.ctx._detached()
            arguments = call.function.arguments(call.input, producer_ctx)
            chunks = open_handler(call.function, arguments, self._executor)
            stream_id = await self.streams.start(
                call.function.name,
                chunks,
                producer_ctx,
                owner=_owner(call.ctx),
                call_id=record.call_id,
            )
            await transport.send_headers(((STREAM_ID_METADATA_KEY, stream_id),))
            encoded = not self._middlewares  # a middleware sees chunks as values
            async for value in self.streams.read(stream_id, 0, leased=True, encoded=encoded):
                yield value

        return build_chain(self._middlewares, start_and_read)

    def _resume_chain(
        self,
        invocation: Invocation,
        resume: ResumePoint,
        known: StreamInfo | None,
        transport: Transport,
    ) -> CallNext:
        """A resume: a call like any other (middleware runs), whose endpoint reads the stream
        on, for the identity that started it only."""

        async def read(call: Call) -> AsyncIterator[Any]:
            stream = known or await self.streams.describe(resume.stream_id)
            if stream is None or stream.owner != _owner(call.ctx):
                raise unknown_stream(resume.stream_id)
            if invocation.function and invocation.function != stream.function:
                raise InvalidArgument(
                    f"stream {resume.stream_id} is a stream of {stream.function!r}, not of"
                    f" {echoed(invocation.function)}",
                    field_violations=[("function", f"the stream belongs to {stream.function!r}")],
                )
            await transport.send_headers(((STREAM_ID_METADATA_KEY, resume.stream_id),))
            encoded = not self._middlewares
            chunks = self.streams.read(
                resume.stream_id, resume.next_seq, leased=False, encoded=encoded
            )
            async for value in chunks:
                yield value

        return build_chain(self._middlewares, read)

    # --- CancelStream ----------------------------------------------------------------------

    async def cancel_stream(self, stream_id: str, invocation: Invocation) -> bool | Ending:
        """Ask a resumable stream's producer to stop; whether it was running, or the Ending
        that refuses the request. Middleware runs as for a call of the stream's function, and
        only the identity that started the stream may cancel it."""
        ctx: Context | None = None
        call: Call | None = None
        record = CallRecord(UNKNOWN_FUNCTION, invocation.metadata, invocation.peer)
        running: list[bool] = []
        try:
            if invocation.unreadable is not None:
                raise invocation.unreadable
            stream = await self.streams.describe(stream_id)
            function = None if stream is None else self.registry.get(stream.function)
            if stream is None or function is None:
                raise unknown_stream(stream_id)
            record.function = function.name
            ctx = _context_for(function, invocation)

            async def cancel(call: Call) -> AsyncIterator[Any]:
                if stream.owner != _owner(call.ctx):
                    raise unknown_stream(stream_id)
                running.append(await self.streams.cancel(stream_id))
                return
                yield  # an async generator, like every endpoint

            call = Call(function, NO_INPUT, ctx)
            async for _ in build_chain(self._middlewares, cancel)(call):
                pass
        except Exception as error:
            _, refusal = outcome(error, ctx, record)
            return _OK if refusal is None else ending_of(refusal, ())
        finally:
            if call is not None:
                await close_opened(call)
        return bool(running and running[0])


class _RefusalLog:
    """The log lines for calls refused for one reason: the first refusal at once, then at
    most one line every ``REFUSAL_LOG_SECONDS`` counting the calls refused meanwhile, until
    a quiet interval; a burst of refusals is a few lines, not one a call."""

    __slots__ = ("_level", "_timer", "_unlogged", "_why")

    def __init__(self, level: int, why: str) -> None:
        self._level = level
        self._why = why
        self._unlogged = 0
        self._timer: asyncio.TimerHandle | None = None

    def note(self) -> None:
        """Count one refused call (in the event loop that serves it)."""
        if self._timer is None:
            logger.log(self._level, "refused a call: %s", self._why)
            self._timer = asyncio.get_running_loop().call_later(REFUSAL_LOG_SECONDS, self._tick)
        else:
            self._unlogged += 1

    def _tick(self) -> None:
        self._timer = None
        if self._unlogged:
            self.flush()
            self._timer = asyncio.get_running_loop().call_later(REFUSAL_LOG_SECONDS, self._tick)

    def flush(self) -> None:
        """Log the count of refusals not logged yet, if any."""
        if self._unlogged:
            logger.log(
                self._level,
                "refused %d more call(s) within %g s: %s",
                self._unlogged,
                REFUSAL_LOG_SECONDS,
                self._why,
            )
            self._unlogged = 0


DEADLINE_SLACK = 0.001
"""Seconds: how close to its deadline a cancelled call counts as one that ran out of time."""


def outcome(
    raised: BaseException | None, ctx: Context | None, record: CallRecord
) -> tuple[grpc.StatusCode, ServerFnError | None]:
    """How a call ended: the code observers record and the error the caller gets (None: OK,
    or nothing to send, the caller being gone). Unexpected exceptions are logged here with
    the call's id, which is all the caller learns of them."""
    if raised is None:
        return grpc.StatusCode.OK, None
    if isinstance(raised, CallEnded | asyncio.CancelledError):
        if ctx is None:
            return grpc.StatusCode.CANCELLED, None
        ctx._mark_cancelled()
        remaining = ctx.time_remaining()
        # The deadline was taken as the handler started, a little after the transport's own
        # clock started: a cancel within DEADLINE_SLACK of it is that deadline.
        if remaining is not None and remaining <= DEADLINE_SLACK:
            return grpc.StatusCode.DEADLINE_EXCEEDED, None
        return grpc.StatusCode.CANCELLED, None
    if isinstance(raised, ServerFnError):
        return raised.code, raised
    if not isinstance(raised, Exception):
        raise raised  # KeyboardInterrupt, SystemExit: not a call's to handle
    logger.error(
        "server function %r raised an unexpected error (call %s)",
        record.function,
        record.call_id,
        exc_info=(type(raised), raised, raised.__traceback__),
    )
    error = unexpected_error(record.function, record.call_id)
    return error.code, error


def ending_of(error: ServerFnError, trailers: Sequence[tuple[str, MetadataValue]]) -> Ending:
    """The Ending that sends ``error`` (its details in the ``google.rpc.Status`` trailer)
    after ``trailers``."""
    status = error.to_status()
    return Ending(status.code, status.details, (*trailers, *status.trailing_metadata))


def _ending(
    record: CallRecord,
    code: grpc.StatusCode,
    error: ServerFnError | None,
    trailers: Sequence[tuple[str, MetadataValue]],
) -> Ending | None:
    """Record how the call ended; the Ending to send, None when the caller is gone."""
    record.code = code
    if error is not None:
        ending = ending_of(error, trailers)
        record.error_message = ending.message
        return ending
    if code is grpc.StatusCode.OK:
        return Ending(code, "", trailers) if trailers else _OK
    return None


def _context_for(function: ServerFunction, invocation: Invocation) -> Context:
    """The handler's Context for a call, tied to the call's task (its cancellation)."""
    return Context(
        function.name,
        invocation.metadata,
        invocation.peer,
        invocation.time_remaining,
        invocation.identify,
        asyncio.current_task(),
    )


def _owner(ctx: Context) -> str:
    identity = ctx.identity
    return "" if identity is None else identity.subject


def _unknown_function(name: str) -> NotFound:
    return NotFound(
        f"unknown server function {echoed(name)}; ListFunctions lists what this server offers"
    )
