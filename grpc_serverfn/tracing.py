"""OpenTelemetry traces: one SERVER span per ``Invoke``, named after the server function.

``Server(observers=[OpenTelemetryTracing()])`` (or ``grpc-serverfn serve --trace``) starts a
span when a call starts, as a child of the trace context the caller sent in its metadata (W3C
``traceparent``/``tracestate``, through the globally configured propagator), and makes it the
current span while the handler runs, so the spans a handler makes (in a worker thread too) are
its children. The span ends with the call, recording its status and how many chunks it sent
(the end is handed to the SDK in batches, ``observe.Deferred``, with the call's end time).

Naming follows the RPC semantic conventions' ``$package.$service/$method``, with the function
appended, because every call is the one method ``Invoke``: ``serverfn.v1.ServerFunctions/Invoke
stream_data``. Names stay bounded: a call naming no registered function is ``... (unknown)``.
Attributes are the conventions' (``rpc.system``, ``rpc.service``, ``rpc.method``,
``rpc.grpc.status_code``, ``network.peer.*``, ``error.type``) plus ``serverfn.function``,
``serverfn.protocol``, ``serverfn.call_id``, ``serverfn.chunks``, ``serverfn.messages``,
``serverfn.cancelled`` and ``serverfn.resumed``. A call over the web port is traced the same way
(its ``traceparent`` is a request header): ``serverfn.protocol`` is ``connect`` or ``grpc-web``,
and ``rpc.system`` is ``connect_rpc`` for Connect, whose failed calls also carry the
conventions' ``rpc.connect_rpc.error_code`` (``not_found``); ``rpc.grpc.status_code`` is the
call's status on every protocol, as the server's one call core decided it. As the conventions
say for gRPC servers, only UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE and
DATA_LOSS mark the span as an error (with the status message); the codes a caller's mistake
earns (NOT_FOUND, INVALID_ARGUMENT, ...) and a caller's cancel leave its status unset.

Only this module needs OpenTelemetry installed (``pip install 'grpc-serverfn[otel]'``): the
clients send the caller's context without it (``_trace_context``), and nothing in the package
loads OpenTelemetry unless the application uses it, so tracing costs nothing when it is off.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.propagators.textmap import Getter
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode
except ImportError as error:
    raise ImportError(
        "grpc_serverfn.tracing needs OpenTelemetry: pip install 'grpc-serverfn[otel]'"
    ) from error

import grpc

from ._version import __version__
from ._wire import SERVICE_NAME
from .observe import DEFAULT_DELAY, CallRecord, Deferred

__all__ = ["SERVER_ERROR_CODES", "OpenTelemetryTracing"]

SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
"""The codes that mark a server span as an error (OpenTelemetry's gRPC conventions)."""

logger = logging.getLogger("grpc_serverfn.tracing")

_NAME_PREFIX = f"{SERVICE_NAME}/Invoke "

Metadata = Collection[tuple[str, str | bytes]]


class _MetadataGetter(Getter[Metadata]):
    """Reads the call's invocation metadata (lower-case keys; binary ``-bin`` values skipped)."""

    def get(self, carrier: Metadata, key: str) -> list[str] | None:
        values = [value for name, value in carrier if name == key and isinstance(value, str)]
        return values or None

    def keys(self, carrier: Metadata) -> list[str]:
        return [name for name, _ in carrier]


_GETTER = _MetadataGetter()

# Connect's names of the codes (gRPC's, in lower case, one spelt differently).
_CONNECT_CODES = {
    code: "canceled" if code is grpc.StatusCode.CANCELLED else code.name.lower()
    for code in grpc.StatusCode
}


class OpenTelemetryTracing:
    """An observer that traces every call; ``tracer_provider`` defaults to the global one
    (looked up as spans start, so one configured after this is made is still used). A span's
    end waits at most ``delay`` seconds to be handed to the SDK with others (0: at once)."""

    def __init__(
        self, tracer_provider: trace.TracerProvider | None = None, *, delay: float = DEFAULT_DELAY
    ) -> None:
        self._tracer = trace.get_tracer(
            "grpc_serverfn", __version__, tracer_provider=tracer_provider
        )
        # Checked at the first call, by when the application has set its provider up if at all.
        self._check_global_provider = tracer_provider is None
        self._ends: Deferred[tuple[Span, CallRecord, int]] = Deferred(self._end, delay=delay)

    def call_started(self, record: CallRecord) -> Any:
        """Start the call's span and make it current for the handler."""
        if self._check_global_provider:
            self._check_global_provider = False
            _warn_if_unconfigured()
        metadata: Metadata = record.metadata.pairs()
        # Onto an empty context: whatever was current where the server started is no parent.
        parent = propagate.extract(metadata, getter=_GETTER)
        function = record.function
        # What a sampler may decide on; the rest is set at the end, and only if recorded.
        attributes = {
            "rpc.system": "connect_rpc" if record.protocol == "connect" else "grpc",
            "rpc.service": SERVICE_NAME,
            "rpc.method": "Invoke",
            "serverfn.function": function,
            "serverfn.protocol": record.protocol,
        }
        span = self._tracer.start_span(
            _NAME_PREFIX + function, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token

    def call_ended(self, record: CallRecord, token: Any) -> None:
        """Restore the context and put the end of the span off to a batch (``Deferred``); the
        span keeps the time the call ended."""
        span, attached = token
        otel_context.detach(attached)
        if span.is_recording():
            self._ends.add((span, record, time.time_ns()))
        else:
            span.end()

    def flush(self) -> None:
        """End every span put off so far."""
        self._ends.flush()

    @staticmethod
    def _end(ends: list[tuple[Span, CallRecord, int]]) -> None:
        for span, record, ended in ends:
            code = record.code
            sent = record.sent
            attributes: dict[str, str | int | bool] = {
                "rpc.grpc.status_code": code.value[0],
                "serverfn.call_id": record.call_id,
                "serverfn.chunks": sent.chunks,
                "serverfn.messages": sent.messages,
                "serverfn.cancelled": record.cancelled,
                "serverfn.resumed": record.resumed,
            }
            _add_peer(attributes, record.peer)
            if record.protocol == "connect" and code is not grpc.StatusCode.OK:
                attributes["rpc.connect_rpc.error_code"] = _CONNECT_CODES[code]
            if code in SERVER_ERROR_CODES:
                attributes["error.type"] = code.name
                span.set_status(Status(StatusCode.ERROR, record.error_message or code.name))
            span.set_attributes(attributes)
            span.end(end_time=ended)


def _warn_if_unconfigured() -> None:
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        logger.warning(
            "tracing is on, but no OpenTelemetry SDK is configured, so spans go nowhere: run"
            " under opentelemetry-instrument, or set a TracerProvider before serving"
        )


def _add_peer(attributes: dict[str, str | int | bool], peer: str) -> None:
    # grpc names peers "ipv4:127.0.0.1:53124", "ipv6:%5B::1%5D:53124" or "unix:/path".
    kind, _, address = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host, _, port = address.rpartition(":")
        attributes["network.peer.address"] = host.removeprefix("%5B").removesuffix("%5D")
        if port.isdigit():
            attributes["network.peer.port"] = int(port)
        attributes["network.transport"] = "tcp"
    elif kind == "unix" and address:
        attributes["network.peer.address"] = address
        attributes["network.transport"] = "unix"
