"""Run one benchmark server: ``python -m benchmarks.serve KIND`` (see KINDS).

``serverfn-observed`` is the ``serverfn`` server with metrics, traces and call logs all on, or
only those named in ``SERVERFN_BENCH_OBSERVERS`` (e.g. ``traces,logs``; empty for none), to see
what each one costs.

``serverfn-workers`` is the ``serverfn`` app (gRPC port only) served by ``WORKERS`` worker
processes sharing one port, as ``grpc-serverfn serve --workers N`` runs it (a supervisor forks
the workers, each a ``WorkerServer`` on the port with ``SO_REUSEPORT``; the kernel spreads
connections over them); each worker prints ``WORKER <pid>`` once it serves, and the last one
to start prints the port.

The server binds 127.0.0.1 on an ephemeral port (``--port 0``) and prints ``PORT <n>`` on
stdout once it is serving; ``serverfn`` also serves its web port (Connect, gRPC-Web; HTTP/1.1
and h2c), printed first as ``WEB_PORT <n>``. It stops on SIGTERM or SIGINT, or when its stdin
reaches end of file, so it never outlives the benchmark that started it (even one killed with
SIGKILL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = [
    "KINDS",
    "OBSERVERS_ENV",
    "READY_PREFIX",
    "WEB_PORT_PREFIX",
    "WORKERS",
    "WORKERS_KIND",
    "WORKER_PREFIX",
    "main",
]

READY_PREFIX = "PORT "
WEB_PORT_PREFIX = "WEB_PORT "
WORKER_PREFIX = "WORKER "
KINDS = ("baseline", "serverfn", "serverfn-observed", "grpclib")
"""The servers every scenario compares (one process each)."""
WORKERS_KIND = "serverfn-workers"
"""The ``serverfn`` app with ``WORKERS`` worker processes (the chat scenario's extra row)."""
WORKERS = 2
OBSERVERS_ENV = "SERVERFN_BENCH_OBSERVERS"
WEB_ENV = "SERVERFN_BENCH_WEB"
"""``0``: the ``serverfn`` server opens no web port (the instruction counts, under valgrind,
need none, and importing and starting hypercorn there takes a minute)."""

Stop = Callable[[], Awaitable[None]]


async def _start(kind: str, host: str, port: int) -> tuple[int, Stop]:
    """Start the server of ``kind``; returns its port and a coroutine function that stops it."""
    if kind == "baseline":
        from . import baseline

        grpc_server, bound = await baseline.start(host, port)
        return bound, lambda: grpc_server.stop(0)
    if kind in ("serverfn", "serverfn-observed"):
        from grpc_serverfn import Server

        from .app import fns

        observers = _observers(fns) if kind == "serverfn-observed" else ()
        # The web port beside the gRPC port, in the same process and event loop (its rows
        # compare the two); idle, it costs the gRPC rows nothing.
        web_port = 0 if kind == "serverfn" and os.environ.get(WEB_ENV) != "0" else None
        serverfn_server = Server(
            fns, host=host, port=port, web_port=web_port, grace=0.0, observers=observers
        )
        await serverfn_server.start()
        if serverfn_server.web_port is not None:
            print(f"{WEB_PORT_PREFIX}{serverfn_server.web_port}", flush=True)
        return serverfn_server.port, lambda: serverfn_server.stop(0.0)
    if kind == "grpclib":
        from . import grpclib_server

        grpclib, bound = await grpclib_server.start(host, port)

        async def stop() -> None:
            grpclib.close()
            await grpclib.wait_closed()

        return bound, stop
    raise ValueError(f"unknown server kind {kind!r}; expected one of {', '.join(KINDS)}")


def _observers(registry: Any) -> list[Any]:
    """Metrics, traces and call logs as a production deployment runs them: Prometheus series
    per function, every span recorded by the OpenTelemetry SDK and exported in batches (to an
    exporter that drops them), one JSON log line per call written to /dev/null."""
    import logging
    from collections.abc import Sequence

    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from grpc_serverfn.calllog import LOGGER_NAME, CallLog, json_formatter
    from grpc_serverfn.metrics import PrometheusMetrics
    from grpc_serverfn.tracing import OpenTelemetryTracing

    class Dropped(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    handler = logging.FileHandler(os.devnull)
    handler.setFormatter(json_formatter())
    calls = logging.getLogger(LOGGER_NAME)
    calls.addHandler(handler)
    calls.setLevel(logging.INFO)
    calls.propagate = False
    makers: dict[str, Callable[[], Any]] = {
        "metrics": lambda: PrometheusMetrics(registry),
        "traces": lambda: OpenTelemetryTracing(provider),
        "logs": CallLog,
    }
    chosen = [name for name in os.environ.get(OBSERVERS_ENV, ",".join(makers)).split(",") if name]
    unknown = sorted(set(chosen) - set(makers))
    if unknown:
        raise SystemExit(f"{OBSERVERS_ENV}: unknown {', '.join(unknown)}; use {', '.join(makers)}")
    return [makers[name]() for name in chosen]


def _watch_stdin(on_eof: Callable[[], object]) -> None:
    """Call ``on_eof`` (in a thread of its own) when stdin reaches end of file: the parent
    closed it or went away."""

    def read_until_eof() -> None:
        with contextlib.suppress(OSError):
            while sys.stdin.buffer.read(4096):
                pass
        on_eof()

    threading.Thread(target=read_until_eof, name="stdin-watch", daemon=True).start()


async def _serve(kind: str, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    bound, stop_server = await _start(kind, host, port)
    _watch_stdin(lambda: loop.call_soon_threadsafe(stop.set))
    print(f"{READY_PREFIX}{bound}", flush=True)
    await stop.wait()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop_server(), 5.0)


def _serve_workers(host: str, port: int, count: int) -> None:
    """Serve ``benchmarks.app`` with ``count`` worker processes until SIGTERM or SIGINT (or the
    end of stdin), as ``grpc-serverfn serve --workers`` does."""
    from grpc_serverfn import _workers as workers

    def run_worker(port: int, web_port: int | None, ready: Callable[[], None]) -> int:
        from .app import fns  # imported in the worker, after the fork, as the CLI does

        def serving() -> None:
            print(f"{WORKER_PREFIX}{os.getpid()}", flush=True)
            if workers.worker_index() == count - 1:  # they start one after the other
                print(f"{READY_PREFIX}{port}", flush=True)
            ready()

        server = workers.WorkerServer(
            fns,
            host=host,
            port=port,
            grace=0.0,
            grpc_options=[workers.REUSE_PORT_OPTION],
            on_serving=serving,
        )
        return asyncio.run(server.serve_until_signalled())

    # At the end of stdin, SIGTERM to the supervisor, which stops every worker.
    _watch_stdin(lambda: os.kill(os.getpid(), signal.SIGTERM))
    sys.exit(workers.supervise(count, host=host, port=port, run_worker=run_worker))


def main() -> None:
    """Parse the arguments and serve until told to stop; then exit at once."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=(*KINDS, WORKERS_KIND))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.kind == WORKERS_KIND:
        _serve_workers(args.host, args.port, WORKERS)
    asyncio.run(_serve(args.kind, args.host, args.port))
    sys.stdout.flush()
    sys.stderr.flush()
    # Worker threads (a sync generator's, grpc's) must not keep the process alive.
    os._exit(0)


if __name__ == "__main__":
    main()
