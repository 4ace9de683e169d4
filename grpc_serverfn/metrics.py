"""Prometheus metrics per server function: ``PrometheusMetrics`` is an observer (see
``grpc_serverfn.observe``) that counts every ``Invoke`` under the conventional gRPC names,
labelled by the server function as well, since grpc's per-method view only ever sees "Invoke",
and by the wire protocol that carried the call (``grpc``, ``connect``, ``grpc-web``), since one
server serves gRPC and, on its web port, browsers.

::

    metrics = PrometheusMetrics(fns)
    endpoint = MetricsEndpoint(metrics.registry, port=9100)  # http://127.0.0.1:9100/metrics
    Server(fns, observers=[metrics])

Needs prometheus-client (``pip install 'grpc-serverfn[metrics]'``). Label values stay bounded:
the function label is a registered function's name or ``UNKNOWN_FUNCTION``, the protocol label
one of ``observe.PROTOCOLS``, and the series of the protocols asked for are created up front
(scrapes show zeros before the first call; calls look nothing up).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from ._wire import NOT_STARTED_REASONS
from .observe import PROTOCOLS, UNKNOWN_FUNCTION, CallRecord
from .registry import Registry

__all__ = [
    "FIRST_CHUNK_BUCKETS",
    "GRPC_METHOD",
    "GRPC_SERVICE",
    "GRPC_TYPE",
    "HANDLING_BUCKETS",
    "MetricsEndpoint",
    "PrometheusMetrics",
]

GRPC_TYPE = "server_stream"
GRPC_SERVICE = "serverfn.v1.ServerFunctions"
GRPC_METHOD = "Invoke"
_LABELS = ("grpc_type", "grpc_service", "grpc_method", "function", "protocol")

# Streams run for minutes (an LLM reply, a CSV job): the default buckets stop at 10 s.
HANDLING_BUCKETS: tuple[float, ...] = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    *(30.0, 60.0, 120.0, 300.0, 600.0),
)
FIRST_CHUNK_BUCKETS: tuple[float, ...] = (
    *(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


class _Series:
    """One function's label children over one protocol, bound once so that a call only
    increments."""

    __slots__ = (
        "cancelled",
        "coalesced",
        "first_chunk",
        "handled",
        "handling",
        "in_flight",
        "refused",
        "sent",
        "started",
    )

    def __init__(self, metrics: PrometheusMetrics, function: str, protocol: str) -> None:
        labels = (GRPC_TYPE, GRPC_SERVICE, GRPC_METHOD, function, protocol)
        self.started = metrics.started.labels(*labels)
        self.handled = {
            code: metrics.handled.labels(*labels, code.name) for code in grpc.StatusCode
        }
        self.sent = metrics.sent.labels(*labels)
        self.handling = metrics.handling.labels(*labels)
        self.first_chunk = metrics.first_chunk.labels(*labels)
        self.in_flight = metrics.in_flight.labels(*labels)
        self.cancelled = metrics.cancelled.labels(*labels)
        self.coalesced = metrics.coalesced.labels(*labels)
        self.refused = {
            reason: metrics.refused.labels(*labels, reason) for reason in NOT_STARTED_REASONS
        }


class PrometheusMetrics:
    """An observer counting calls per server function into a prometheus-client registry.

    ``functions`` are the names the server can report (a ``Registry`` gives its own); their
    series and ``UNKNOWN_FUNCTION``'s are created now for each of ``protocols``: only ``grpc`` by
    default, all of ``PROTOCOLS`` for a server with a web port (``serve --web-port`` asks for
    them). A call over a protocol not asked for still counts, in series made at its first call
    (no zeros before it). ``registry`` defaults to a new
    ``CollectorRegistry`` of its own (pass one to share it); ``process_metrics`` adds
    prometheus-client's process, platform and GC collectors to it, as a whole serving process
    wants.
    """

    def __init__(
        self,
        functions: Registry | Iterable[str],
        *,
        registry: CollectorRegistry | None = None,
        process_metrics: bool = False,
        protocols: Iterable[str] = ("grpc",),
        handling_buckets: Sequence[float] = HANDLING_BUCKETS,
        first_chunk_buckets: Sequence[float] = FIRST_CHUNK_BUCKETS,
    ) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        into = self.registry
        self.started = Counter(
            "grpc_server_started",
            "Invoke calls started on the server, by server function and protocol.",
            _LABELS,
            registry=into,
        )
        self.handled = Counter(
            "grpc_server_handled",
            "Invoke calls completed on the server, by server function, protocol and gRPC status"
            " code.",
            (*_LABELS, "grpc_code"),
            registry=into,
        )
        self.sent = Counter(
            "grpc_server_msg_sent",
            "Chunks sent by the server, by server function: one per value the function yields,"
            " however many of them travelled in one gRPC message.",
            _LABELS,
            registry=into,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Seconds from an Invoke call's start to its end, by server function and protocol.",
            _LABELS,
            buckets=handling_buckets,
            registry=into,
        )
        self.first_chunk = Histogram(
            "serverfn_first_chunk_seconds",
            "Seconds from a call's start to the write of its first chunk, by server function"
            " (calls that sent no chunk are not observed).",
            _LABELS,
            buckets=first_chunk_buckets,
            registry=into,
        )
        self.in_flight = Gauge(
            "serverfn_streams_in_flight",
            "Invoke calls running now, by server function and protocol.",
            _LABELS,
            registry=into,
        )
        self.cancelled = Counter(
            "serverfn_calls_cancelled",
            "Calls the caller ended before the server did (cancelled, went away or ran out of"
            " time), by server function.",
            _LABELS,
            registry=into,
        )
        self.coalesced = Counter(
            "serverfn_chunks_coalesced",
            "Chunks that travelled in one gRPC message together with others (chunks sent minus"
            " messages sent), by server function.",
            _LABELS,
            registry=into,
        )
        self.refused = Counter(
            "serverfn_calls_refused",
            "Calls the server refused before running their function, by server function and"
            " reason: SERVER_AT_CAPACITY (RESOURCE_EXHAUSTED at its concurrent-call limit) or"
            " SERVER_SHUTTING_DOWN (UNAVAILABLE while it stops). Also counted in"
            " grpc_server_handled under their status code.",
            (*_LABELS, "reason"),
            registry=into,
        )
        if process_metrics:
            ProcessCollector(registry=into)
            PlatformCollector(registry=into)
            GCCollector(registry=into)
        names = [f.name for f in functions] if isinstance(functions, Registry) else functions
        wanted = tuple(protocols)
        if unknown := set(wanted) - set(PROTOCOLS):
            raise ValueError(
                f"PrometheusMetrics.protocols must be some of {PROTOCOLS}, not {sorted(unknown)}"
            )
        self._series = {
            (name, protocol): _Series(self, name, protocol)
            for name in (*names, UNKNOWN_FUNCTION)
            for protocol in wanted
        }
        self._adding = threading.Lock()

    def call_started(self, record: CallRecord) -> _Series:
        """Count the call as started and in flight; its series is the token."""
        series = self._series.get((record.function, record.protocol))
        if series is None:
            series = self._add(record.function, record.protocol)
        series.started.inc()
        series.in_flight.inc()
        return series

    def call_ended(self, record: CallRecord, token: Any) -> None:
        """Count how the call ended: status, chunks, timing, cancellation."""
        series: _Series = token
        series.in_flight.dec()
        series.handled[record.code].inc()
        sent = record.sent
        if sent.chunks:
            series.sent.inc(sent.chunks)
            if sent.chunks > sent.messages:
                series.coalesced.inc(sent.chunks - sent.messages)
        series.handling.observe(record.ended_at - record.started_at)
        if sent.first_at is not None:
            series.first_chunk.observe(sent.first_at - record.started_at)
        if record.cancelled:
            series.cancelled.inc()
        elif record.refused is not None:
            series.refused[record.refused].inc()

    def _add(self, function: str, protocol: str) -> _Series:
        # A name the constructor was not given, yet the server's registry holds (functions
        # added after this observer was made), or a protocol it was not asked for (a web port
        # it was not told of): both still bounded, so they get series of their own.
        with self._adding:
            series = self._series.get((function, protocol))
            if series is None:
                series = self._series[function, protocol] = _Series(self, function, protocol)
            return series


class MetricsEndpoint:
    """prometheus-client's HTTP server for ``registry`` on ``host:port`` (0: any free port),
    in a daemon thread of this process, started now; every path serves the metrics."""

    def __init__(self, registry: CollectorRegistry, *, host: str = "127.0.0.1", port: int) -> None:
        bare_host = host.strip("[]")
        try:
            self._server, self._thread = start_http_server(port, bare_host, registry)
        except OSError as error:
            shown = f"[{bare_host}]:{port}" if ":" in bare_host else f"{bare_host}:{port}"
            raise OSError(f"cannot serve metrics on {shown}: {error.strerror or error}") from None
        self.host = bare_host
        self.port: int = self._server.server_address[1]
        """The bound port (``port=0`` resolved)."""

    @property
    def url(self) -> str:
        """Where to scrape, e.g. ``http://127.0.0.1:9100/metrics``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
