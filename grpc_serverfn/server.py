"""The gRPC server: the ServerFunctions servicer on grpc.aio, with health, reflection and
graceful shutdown.

``ServerFunctionsServicer.Invoke`` is the one place that drives every call: it looks the
function up, decodes the input, runs the middleware chain and the handler, encodes and writes
each chunk as the transport accepts it (backpressure), maps every failure to a status, and
closes every stream it opened in ``finally``, so cleanup runs at cancel time rather than at
garbage collection. The RPCs are registered with tolerant request parsers, so bytes that are
not the request message end as INVALID_ARGUMENT rather than grpc's UNKNOWN with the
exception's text; limits (concurrent calls, input depth, chunk size) are checked here too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Unpack

import grpc
import grpc.aio
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from . import codec
from ._proto.serverfn.v1 import serverfn_pb2, serverfn_pb2_grpc
from .auth import Identity, certificate_identity
from .concurrency import open_handler
from .config import (
    DEFAULT_MAX_CONCURRENT_CALLS,
    DEFAULT_MAX_INPUT_DEPTH,
    DEFAULT_MAX_MESSAGE_BYTES,
    Limits,
    ServerOptions,
    StreamOptions,
)
from .context import Context
from .errors import (
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServerFnError,
    Unavailable,
    echoed,
)
from .middleware import Call, build_chain, close_opened
from .observe import UNKNOWN_FUNCTION, CallRecord, Observer
from .registry import NO_INPUT, Registry, ServerFunction
from .resumable import ResumableStreams
from .streaming import (
    MAX_BATCH,
    CallEnded,
    Stragglers,
    encoding_for,
    message_limits,
    send_coalesced,
    send_each,
)

__all__ = [
    "SERVICE_NAME",
    "Server",
    "ServerFunctionsServicer",
    "ServerTLS",
    "serve",
]

logger = logging.getLogger("grpc_serverfn.server")

SERVICE_NAME: str = serverfn_pb2.DESCRIPTOR.services_by_name["ServerFunctions"].full_name
_CLEANUP_SECONDS = 1.0  # how long shutdown waits for cancelled calls' cleanup
# Between refusing new calls ourselves (UNAVAILABLE, with a message) and grpc's own stop, whose
# refusals can reach a racing caller as CANCELLED.
_DRAIN_SECONDS = 0.1

_METHODS = {"GET": serverfn_pb2.METHOD_GET, "POST": serverfn_pb2.METHOD_POST}


class ServerFunctionsServicer(serverfn_pb2_grpc.ServerFunctionsServicer):
    """Serves a frozen Registry over ``serverfn.v1.ServerFunctions``."""

    def __init__(
        self,
        registry: Registry,
        *,
        executor: ThreadPoolExecutor | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_concurrent_calls: int = DEFAULT_MAX_CONCURRENT_CALLS,
        max_input_depth: int = DEFAULT_MAX_INPUT_DEPTH,
        verified_client_certificates: bool = False,
        streams: ResumableStreams | None = None,
        observers: Sequence[Observer] = (),
    ) -> None:
        registry.freeze()
        self._observers = tuple(observers)
        self._max_concurrent_calls = max_concurrent_calls
        self._max_input_depth = max_input_depth
        # Only a server that verifies client certificates may take their subject as an identity.
        self._certificates = verified_client_certificates
        self._max_chunk_bytes, self._max_batch_bytes = message_limits(max_message_bytes)
        self._registry = registry
        self._executor = executor
        self._chain = build_chain(registry.middlewares, self._endpoint)
        self._function_list = serverfn_pb2.ListFunctionsResponse(
            functions=[_describe(function) for function in registry]
        )
        self._in_flight = 0
        self._stragglers = Stragglers()
        self._idle = asyncio.Event()
        self._idle.set()
        self._draining = False
        self.streams = (
            streams
            if streams is not None
            else ResumableStreams(
                max_chunk_bytes=self._max_chunk_bytes, max_batch_bytes=self._max_batch_bytes
            )
        )

    def _busy(self) -> ResourceExhausted:
        return ResourceExhausted(
            f"the server is serving its limit of {self._max_concurrent_calls} concurrent calls;"
            " retry later"
        )

    async def _stream_function(self, stream_id: str) -> str:
        """The function of a stored stream, or "" when unknown (the resume then says why)."""
        if not stream_id:
            return ""
        try:
            return await self.streams.store.function_of(stream_id) or ""
        except Exception:
            return ""  # the store failed: reading the stream reports it

    def _context_for(
        self,
        function: ServerFunction,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> Context:
        """The handler's Context for a call (with the client certificate's identity, on a
        server that verifies them)."""
        identify = _certificate_identifier(context) if self._certificates else None
        return Context.from_grpc(function.name, context, identify)

    def start_draining(self) -> None:
        """Refuse every new call from now on with UNAVAILABLE (the server is shutting down)."""
        self._draining = True

    async def wait_until_idle(self) -> None:
        """Wait until every Invoke has ended, its cleanup included."""
        await self._idle.wait()

    def _endpoint(self, call: Call) -> AsyncIterator[Any]:
        arguments = call.function.arguments(call.input, call.ctx)
        return open_handler(call.function, arguments, self._executor)

    async def Invoke(  # noqa: N802 - the RPC's name
        self,
        request: serverfn_pb2.InvokeRequest,
        context: grpc.aio.ServicerContext[serverfn_pb2.InvokeRequest, serverfn_pb2.Chunk],
    ) -> None:
        undecodable = isinstance(request, _Undecodable)
        function = None if undecodable else self._registry.get(request.function)
        if function is None and not undecodable and request.HasField("resume"):
            # A resume may leave the function out: label it by the stream's own.
            function = self._registry.get(await self._stream_function(request.resume.stream_id))
        record = CallRecord(UNKNOWN_FUNCTION if function is None else function.name, context)
        observers = self._observers
        if observers:
            record.peer  # noqa: B018 - read now: once the caller has cancelled, grpc may say ""
            tokens = [observer.call_started(record) for observer in observers]
        else:
            tokens = []
        try:
            await self._invoke(request, function, record, context)
        finally:
            record.ended_at = time.perf_counter()
            if record.code is grpc.StatusCode.OK:  # not ended by the caller: what we set, if any
                record.code = context.code() or grpc.StatusCode.OK
                if record.code is not grpc.StatusCode.OK:
                    record.error_message = context.details() or ""
            for observer, token in zip(observers, tokens, strict=True):
                try:
                    observer.call_ended(record, token)
                except Exception:
                    logger.exception("observer %r failed at the end of a call", observer)
            record.context = None  # grpc frees it with the call

    async def _invoke(
        self,
        request: serverfn_pb2.InvokeRequest,
        function: ServerFunction | None,
        record: CallRecord,
        context: grpc.aio.ServicerContext[serverfn_pb2.InvokeRequest, serverfn_pb2.Chunk],
    ) -> None:
        if self._draining:
            _end_with(context, _SHUTTING_DOWN, ())
            return
        if isinstance(request, _Undecodable):
            _end_with(context, request.error(), ())
            return
        resuming = request.HasField("resume")
        if function is None and not (resuming and not request.function):
            _end_with(context, _unknown_function(request.function), ())
            return
        if self._in_flight >= self._max_concurrent_calls:
            # Refused at once rather than queued (grpc's maximum_concurrent_rpcs queues).
            _end_with(context, self._busy(), ())
            return
        self._in_flight += 1
        self._idle.clear()
        try:
            if resuming:
                record.resumed = True
                await self._read_stream(
                    request, context, request.resume.stream_id, function, record=record
                )
            elif function is not None and function.resumable:
                await self._start_stream(function, request, context, record)
            elif function is not None:
                await self._drive(function, request, context, record)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def _drive(
        self,
        function: ServerFunction,
        request: serverfn_pb2.InvokeRequest,
        context: grpc.aio.ServicerContext[serverfn_pb2.InvokeRequest, serverfn_pb2.Chunk],
        record: CallRecord,
    ) -> None:
        ctx = self._context_for(function, context)
        call: Call | None = None
        error: ServerFnError | None = None
        try:
            encoding = encoding_for(request)
            record.input = data = _decode_input(request, self._max_input_depth)
            call = Call(function, data, ctx)
            chunks = self._chain(call)
            max_batch = min(request.max_batch, MAX_BATCH)
            if max_batch > 1:
                await send_coalesced(
                    chunks,
                    context.write,
                    encoding,
                    function.name,
                    max_batch=max_batch,
                    max_batch_bytes=self._max_batch_bytes,
                    max_chunk_bytes=self._max_chunk_bytes,
                    sent=record.sent,
                )
            else:
                task = self._stragglers.watch(function.name)
                try:
                    await send_each(
                        chunks,
                        context.write,
                        encoding,
                        function.name,
                        max_chunk_bytes=self._max_chunk_bytes,
                        sent=record.sent,
                    )
                finally:
                    self._stragglers.forget(task)
        except CallEnded:
            # The caller cancelled, ran out of time or went away while a chunk was being sent.
            ctx._mark_cancelled()
            record.code = _ended_by_caller(ctx)
            return
        except ServerFnError as raised:
            error = raised
        except asyncio.CancelledError:
            ctx._mark_cancelled()
            record.code = _ended_by_caller(ctx)
            raise
        except Exception:
            logger.exception(
                "server function %r raised an unexpected error (call %s)",
                function.name,
                record.call_id,
            )
            error = unexpected_error(function.name, record.call_id)
        finally:
            if call is not None:
                await close_opened(call)
        _end_with(context, error, ctx.trailing_metadata)

    async def _start_stream(
        self,
        function: ServerFunction,
        request: serverfn_pb2.InvokeRequest,
        context: grpc.aio.ServicerContext[serverfn_pb2.InvokeRequest, serverfn_pb2.Chunk],
        record: CallRecord,
    ) -> None:
        ctx = self._context_for(function, context)
        try:
            encoding_for(request)  # refused before a stream exists
            record.input = data = _decode_input(request, self._max_input_depth)
            call = Call(function, data, ctx)
            stream_id = await self.streams.start(call, self._chain)
        except ServerFnError as error:
            _end_with(context, error, ())
            return
        except Exception:
            logger.exception("could not start a resumable stream of %r", function.name)
            _end_with(context, _store_failed(), ())
            return
        await self._read_stream(request, context, stream_id, function, next_seq=0, record=record)

    async def _read_stream(
        self,
        request: serverfn_pb2.InvokeRequest,
        context: grpc.aio.ServicerContext[serverfn_pb2.InvokeRequest, serverfn_pb2.Chunk],
        stream_id: str,
        function: ServerFunction | None,
        *,
        next_seq: int | None = None,
        record: CallRecord,
    ) -> None:
        """Serve a resumable stream from the store: a new call's, or one being resumed."""
        error: ServerFnError | None
        try:
            error = await self.streams.serve(
                stream_id,
                request.resume.next_seq if next_seq is None else next_seq,
                context,
                encoding_for(request),
                max(1, min(request.max_batch, MAX_BATCH)),
                function=None if function is None else function.name,
                sent=record.sent,
                started_here=next_seq is not None,
            )
        except CallEnded:
            record.code = grpc.StatusCode.CANCELLED
            return  # the reader went away; the producer runs on, its chunks stored
        except ServerFnError as raised:
            error = raised
        except asyncio.CancelledError:
            record.code = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            logger.exception("reading resumable stream %s failed", stream_id)
            error = _store_failed()
        _end_with(context, error, ())

    async def CancelStream(  # noqa: N802 - the RPC's name
        self,
        request: serverfn_pb2.CancelStreamRequest,
        context: grpc.aio.ServicerContext[
            serverfn_pb2.CancelStreamRequest, serverfn_pb2.CancelStreamResponse
        ],
    ) -> serverfn_pb2.CancelStreamResponse:
        try:
            if isinstance(request, _Undecodable):
                raise request.error()
            running = await self.streams.cancel(request.stream_id)
        except ServerFnError as error:
            _end_with(context, error, ())
            return serverfn_pb2.CancelStreamResponse()
        return serverfn_pb2.CancelStreamResponse(was_running=running)

    async def ListFunctions(  # noqa: N802 - the RPC's name
        self,
        request: serverfn_pb2.ListFunctionsRequest,
        context: grpc.aio.ServicerContext[
            serverfn_pb2.ListFunctionsRequest, serverfn_pb2.ListFunctionsResponse
        ],
    ) -> serverfn_pb2.ListFunctionsResponse:
        if isinstance(request, _Undecodable):
            error = request.error()
            await context.abort(error.code, error.message)
        return self._function_list


def _certificate_identifier(
    context: grpc.aio.ServicerContext[Any, Any],
) -> Callable[[], Identity | None]:
    return lambda: certificate_identity(context.auth_context())


class _Undecodable:
    """A request whose bytes are not the message the RPC takes (left for the handler to refuse)."""

    __slots__ = ("message_type", "reason")

    def __init__(self, message_type: str, reason: str) -> None:
        self.message_type = message_type
        self.reason = reason

    def error(self) -> InvalidArgument:
        return InvalidArgument(f"the request is not a valid {self.message_type}: {self.reason}")


def _tolerant_parser(message: type[Message]) -> Callable[[bytes], Any]:
    # grpc's own deserializer failure is UNKNOWN with the exception's text; refuse it cleanly.
    name = message.DESCRIPTOR.full_name

    def parse(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except DecodeError as error:
            reason = str(error).rpartition(": ")[2]
            return _Undecodable(name, _DECODE_REASONS.get(reason, reason) or "undecodable")

    return parse


# upb's reasons read as plain English, except this one, which names its C option.
_DECODE_REASONS = {
    "Exceeded upb_DecodeOptions_MaxDepth": "messages nested more than protobuf's 100 levels"
}


def _handlers(servicer: ServerFunctionsServicer) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "Invoke": grpc.unary_stream_rpc_method_handler(
                servicer.Invoke,
                request_deserializer=_tolerant_parser(serverfn_pb2.InvokeRequest),
                response_serializer=serverfn_pb2.Chunk.SerializeToString,
            ),
            "ListFunctions": grpc.unary_unary_rpc_method_handler(
                servicer.ListFunctions,
                request_deserializer=_tolerant_parser(serverfn_pb2.ListFunctionsRequest),
                response_serializer=serverfn_pb2.ListFunctionsResponse.SerializeToString,
            ),
            "CancelStream": grpc.unary_unary_rpc_method_handler(
                servicer.CancelStream,
                request_deserializer=_tolerant_parser(serverfn_pb2.CancelStreamRequest),
                response_serializer=serverfn_pb2.CancelStreamResponse.SerializeToString,
            ),
        },
    )


def _decode_input(request: serverfn_pb2.InvokeRequest, max_depth: int) -> Any:
    which = request.WhichOneof("input")
    if which == "value":
        data = codec.from_value(request.value)
    elif which == "json" and request.json:
        try:
            data = codec.decode_json(request.json)
        except codec.JSONDecodeError as error:
            where = f"line {error.lineno} column {error.colno} (char {error.pos})"
            raise InvalidArgument(
                f"malformed JSON input: {error.msg} at {where}",
                field_violations=[("json", f"{error.msg} at {where}")],
            ) from None
    else:
        return NO_INPUT
    if codec.deeper_than(data, max_depth):
        raise InvalidArgument(
            f"the input nests deeper than the server's limit of {max_depth} levels",
            field_violations=[(which, f"nested deeper than {max_depth} levels")],
        )
    return data


def _unknown_function(name: str) -> NotFound:
    return NotFound(
        f"unknown server function {echoed(name)}; ListFunctions lists what this server offers"
    )


def _end_with(
    context: grpc.aio.ServicerContext[Any, Any],
    error: ServerFnError | None,
    trailing_metadata: Sequence[tuple[str, str | bytes]],
) -> None:
    if error is None:
        if trailing_metadata:
            context.set_trailing_metadata(tuple(trailing_metadata))
        return
    status = error.to_status()
    context.set_code(status.code)
    context.set_details(status.details)
    context.set_trailing_metadata((*trailing_metadata, *status.trailing_metadata))


_SHUTTING_DOWN = Unavailable("the server is shutting down; retry on another server or later")


def unexpected_error(function: str, call_id: str) -> Internal:
    """What the caller learns of an unexpected exception: nothing but where to look."""
    return Internal(f"server function {function!r} failed; see the server log (call {call_id})")


def _ended_by_caller(ctx: Context) -> grpc.StatusCode:
    if ctx.time_remaining() == 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


def _store_failed() -> Unavailable:
    return Unavailable("the server's stream store failed; see the server log")


def _describe(function: ServerFunction) -> serverfn_pb2.FunctionInfo:
    info = serverfn_pb2.FunctionInfo(
        name=function.name,
        description=function.description,
        streaming=function.streaming,
        method=_METHODS[function.method],
        takes_input=function.takes_input,
        input_required=function.input_required,
        resumable=function.resumable,
    )
    if function.validator is not None:
        info.input_schema.CopyFrom(codec.dict_to_struct(function.validator.schema))
    if function.output_schema is not None:
        info.output_schema.CopyFrom(codec.dict_to_struct(function.output_schema))
    return info


@dataclass(frozen=True, slots=True)
class ServerTLS:
    """Server TLS material (PEM). With ``client_ca`` set, clients must present a certificate
    that CA signed (mutual TLS), and handlers find its subject in ``ctx.identity``."""

    certificate_chain: bytes
    private_key: bytes = field(repr=False)
    client_ca: bytes | None = None

    @classmethod
    def from_files(
        cls,
        certificate_chain: str | Path,
        private_key: str | Path,
        client_ca: str | Path | None = None,
    ) -> ServerTLS:
        """Read the PEM files."""
        return cls(
            Path(certificate_chain).read_bytes(),
            Path(private_key).read_bytes(),
            Path(client_ca).read_bytes() if client_ca is not None else None,
        )

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


class Server:
    """A grpc.aio server for one Registry, with health and (by default) reflection.

    ``port=0`` binds an ephemeral port; ``port`` then reads the one bound. ``limits`` and
    ``streams`` group the tunables (``grpc_serverfn.config``); ``ServerOptions`` documents
    every keyword.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        host: str = "127.0.0.1",
        port: int = 50051,
        tls: ServerTLS | None = None,
        limits: Limits = Limits(),
        streams: StreamOptions = StreamOptions(),
        observers: Sequence[Observer] = (),
        reflection: bool = True,
        grace: float = 10.0,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        grpc_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.registry = registry
        self.host = host
        self.grace = grace
        self.limits = limits
        self.streams = streams
        self._requested_port = port
        self._reflection = reflection
        self._tls = tls
        self._interceptors = tuple(interceptors)
        self._grpc_options = tuple(grpc_options)
        self._observers = tuple(observers)
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._servicer: ServerFunctionsServicer | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The bound port (after ``start``)."""
        if self._port is None:
            raise RuntimeError("the server has not started")
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` as bound, for clients to dial."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    async def start(self) -> None:
        """Bind, register the services and start serving."""
        if self._server is not None:
            raise RuntimeError("the server has already started")
        limits, streams = self.limits, self.streams
        self._executor = ThreadPoolExecutor(
            max_workers=limits.worker_threads, thread_name_prefix="serverfn-worker"
        )
        max_chunk_bytes, max_batch_bytes = message_limits(limits.max_message_bytes)
        servicer = ServerFunctionsServicer(
            self.registry,
            executor=self._executor,
            max_message_bytes=limits.max_message_bytes,
            max_concurrent_calls=limits.max_concurrent_calls,
            max_input_depth=limits.max_input_depth,
            verified_client_certificates=self._tls is not None and self._tls.client_ca is not None,
            streams=ResumableStreams(
                streams.store,
                idle_ttl=streams.idle_ttl,
                retention=streams.retention,
                max_chunk_bytes=max_chunk_bytes,
                max_batch_bytes=max_batch_bytes,
            ),
            observers=self._observers,
        )
        self._servicer = servicer
        server = grpc.aio.server(
            interceptors=self._interceptors,
            options=[
                ("grpc.max_receive_message_length", limits.max_message_bytes),
                ("grpc.max_send_message_length", limits.max_message_bytes),
                *self._grpc_options,
                # After the caller's options: grpc takes the first of a repeated option, and
                # worker processes (grpc_serverfn.workers) share their port with so_reuseport 1.
                ("grpc.so_reuseport", 0),
            ],
        )
        server.add_generic_rpc_handlers((_handlers(servicer),))
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        if self._reflection:
            reflection.enable_server_reflection(
                (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
            )
        bind = f"{self.host}:{self._requested_port}"
        if ":" in self.host and not self.host.startswith("["):
            bind = f"[{self.host}]:{self._requested_port}"
        try:
            if self._tls is not None:
                self._port = server.add_secure_port(bind, self._tls.credentials())
            else:
                self._port = server.add_insecure_port(bind)
        except RuntimeError:
            raise OSError(
                f"cannot listen on {bind}: the address is in use or not available"
            ) from None
        await server.start()
        self._server = server
        for service in ("", SERVICE_NAME):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        logger.info(
            "grpc-serverfn serving %d function(s) on %s (%s, reflection %s)",
            len(self.registry),
            self.address,
            "TLS" if self._tls is not None else "insecure",
            "on" if self._reflection else "off",
        )

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, refuse new calls, let in-flight calls finish within ``grace``
        seconds (default: the server's), then cancel the rest (their cleanup runs)."""
        if self._server is None:
            return
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        grace = self.grace if grace is None else grace
        if self._servicer is not None:
            self._servicer.start_draining()
            await asyncio.sleep(min(_DRAIN_SECONDS, grace))
        if self._servicer is None:
            await self._server.stop(grace)
        else:
            # Resumable streams' producers get the same grace, then end ABORTED.
            streams = self._servicer.streams
            await asyncio.gather(self._server.stop(grace), streams.wait_producers(grace))
            await streams.stop_producing()
            await streams.store.aclose()
        # grpc has cancelled what outlived the grace; let their cleanup (which may need a
        # worker thread to close a sync generator) finish before the threads go.
        if self._servicer is not None:
            try:
                await asyncio.wait_for(self._servicer.wait_until_idle(), _CLEANUP_SECONDS)
            except TimeoutError:
                logger.warning("cleanup of cancelled calls still running after shutdown")
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        self.flush_observers()

    def flush_observers(self) -> None:
        """Have every observer with a ``flush()`` do the work it put off (log lines, spans)."""
        for observer in self._observers:
            flush = getattr(observer, "flush", None)
            if flush is not None:
                try:
                    flush()
                except Exception:
                    logger.exception("observer %r failed to flush", observer)

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def serve_until_signalled(self) -> int:
        """Start, serve until SIGTERM or SIGINT, then shut down gracefully.

        A second signal during the graceful shutdown exits the process at once.
        Returns the exit status: 0 after a graceful shutdown.
        """
        loop = asyncio.get_running_loop()
        stop_requested = asyncio.Event()
        signals_seen = 0

        def on_signal(signum: int) -> None:
            nonlocal signals_seen
            signals_seen += 1
            name = signal.Signals(signum).name
            if signals_seen == 1:
                logger.info(
                    "%s received: shutting down (grace %.1fs); send it again to exit now",
                    name,
                    self.grace,
                )
                stop_requested.set()
            else:
                logger.warning("%s received again: exiting now", name)
                logging.shutdown()
                os._exit(128 + signum)

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            await self.start()
            await stop_requested.wait()
            await self.stop()
            logger.info("grpc-serverfn stopped")
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
        return 0


def serve(registry: Registry, **options: Unpack[ServerOptions]) -> int:
    """Serve ``registry`` until SIGTERM/SIGINT (blocking); options are ``Server``'s."""
    server = Server(registry, **options)
    return asyncio.run(server.serve_until_signalled())
