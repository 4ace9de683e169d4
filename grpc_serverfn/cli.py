"""The ``grpc-serverfn`` command: ``serve``, ``call``, ``list``, ``health`` and ``codegen``.

``call`` prints one JSON line per chunk on stdout; errors go to stderr, and the exit status is
64 + the gRPC status code, as grpcurl's is (2 for usage errors). ``call``, ``list`` and
``health`` connect over TLS with ``--tls`` / ``--ca``, and present a client certificate (mutual
TLS) with ``--cert`` and ``--key``.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import importlib
import importlib.util
import itertools
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO, TypeVar

import orjson
from tqdm import tqdm

from . import _codec as codec
from . import _codegen as codegen
from . import _workers as workers
from . import calllog
from ._client_core import ClientTLS
from ._codegen import EMITTERS
from ._version import __version__
from .client import Client
from .config import (
    DEFAULT_IDLE_TTL,
    DEFAULT_MAX_CONCURRENT_CALLS,
    DEFAULT_MAX_INPUT_DEPTH,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_PENDING_CALLS,
    DEFAULT_MAX_PENDING_SECONDS,
    DEFAULT_RETENTION,
    Limits,
    ServerOptions,
    StreamOptions,
)
from .errors import ServerFnError
from .observe import PROTOCOLS, Observer
from .registry import Registry
from .server import Server, ServerTLS
from .store import StreamStore

__all__ = ["load_registry", "main"]

logger = logging.getLogger("grpc_serverfn.cli")

USAGE_ERROR = 2
_STATUS_EXIT_BASE = 64
_TLS = TypeVar("_TLS", ServerTLS, ClientTLS)


class UsageError(Exception):
    """A mistake on the command line; printed without a traceback, exit status 2."""


def load_registry(spec: str) -> Registry:
    """Load ``module:attr`` or ``path/to/file.py:attr``; ``:attr`` may be left out when the
    module holds exactly one Registry."""
    module_part, _, attribute = spec.partition(":")
    if module_part.endswith(".py") or os.sep in module_part:
        path = Path(module_part).resolve()
        if not path.is_file():
            raise UsageError(f"no such file: {module_part}")
        sys.path.insert(0, str(path.parent))
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        if module_spec is None or module_spec.loader is None:
            raise UsageError(f"cannot import {module_part}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[path.stem] = module
        module_spec.loader.exec_module(module)
    else:
        sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_part)
        except ModuleNotFoundError as error:
            if error.name == module_part or module_part.startswith(f"{error.name}."):
                raise UsageError(f"no module named {module_part!r}") from None
            raise
    if attribute:
        registry = getattr(module, attribute, None)
        if not isinstance(registry, Registry):
            raise UsageError(f"{module_part}:{attribute} is not a grpc_serverfn.Registry")
        return registry
    registries = [value for value in vars(module).values() if isinstance(value, Registry)]
    if len(registries) != 1:
        raise UsageError(
            f"{module_part} holds {len(registries)} Registry objects;"
            f" name one as {module_part}:NAME"
        )
    return registries[0]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grpc-serverfn", description="Serve and call streaming server functions over gRPC."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve a Registry", description="Serve a Registry.")
    serve.add_argument("app", metavar="MODULE:ATTR", help="e.g. app:fns or examples/demo.py:fns")
    serve.add_argument(
        "--host",
        default=os.environ.get("SERVERFN_HOST", "127.0.0.1"),
        help="address to bind (default 127.0.0.1; env SERVERFN_HOST)",
    )
    serve.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("SERVERFN_PORT", "50051")),
        help="port to bind, 0 for any free one (default 50051; env SERVERFN_PORT)",
    )
    serve.add_argument(
        "--no-reflection",
        dest="reflection",
        action="store_false",
        help="turn off gRPC server reflection",
    )
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate chain; turns on TLS")
    serve.add_argument("--tls-key", type=Path, help="PEM private key for --tls-cert")
    serve.add_argument(
        "--tls-client-ca",
        type=Path,
        help="PEM CA bundle; clients must present a certificate it signed (mTLS)",
    )
    serve.add_argument(
        "--grace",
        type=float,
        default=10.0,
        help="seconds in-flight calls may take to finish at shutdown (default 10)",
    )
    serve.add_argument(
        "--max-message-bytes",
        type=int,
        default=DEFAULT_MAX_MESSAGE_BYTES,
        help=f"largest request or chunk message (default {DEFAULT_MAX_MESSAGE_BYTES})",
    )
    serve.add_argument(
        "--max-concurrent-calls",
        type=int,
        default=DEFAULT_MAX_CONCURRENT_CALLS,
        help="calls beyond this many at once are refused with RESOURCE_EXHAUSTED"
        f" (default {DEFAULT_MAX_CONCURRENT_CALLS})",
    )
    serve.add_argument(
        "--max-pending-calls",
        type=int,
        default=DEFAULT_MAX_PENDING_CALLS,
        help="calls grpc holds until the server takes them up (a burst waits there); grpc"
        f" cancels those beyond (default {DEFAULT_MAX_PENDING_CALLS})",
    )
    serve.add_argument(
        "--max-pending-seconds",
        type=int,
        default=DEFAULT_MAX_PENDING_SECONDS,
        help="how long a call may wait in grpc to be taken up before grpc cancels it"
        f" (default {DEFAULT_MAX_PENDING_SECONDS})",
    )
    serve.add_argument(
        "--max-input-depth",
        type=int,
        default=DEFAULT_MAX_INPUT_DEPTH,
        help=f"deepest nesting of an input's lists and objects (default {DEFAULT_MAX_INPUT_DEPTH})",
    )
    serve.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        metavar="N",
        help="worker processes sharing the port, and the web port (SO_REUSEPORT); 'auto' for"
        " one per CPU (default 1: no supervisor)",
    )
    web = serve.add_argument_group(
        "browsers: Connect and gRPC-Web on a port of their own (pip install 'grpc-serverfn[web]')"
    )
    web.add_argument(
        "--web-port",
        type=_port_number,
        default=os.environ.get("SERVERFN_WEB_PORT"),
        metavar="PORT",
        help="serve the functions over Connect and gRPC-Web on this port too, 0 for any free one"
        " (default: off; env SERVERFN_WEB_PORT); HTTP/1.1 and h2c, or with --tls-cert TLS with"
        " HTTP/2",
    )
    web.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let pages from ORIGIN (e.g. https://app.example.com, or *) call the web port;"
        " repeat for more",
    )
    web.add_argument(
        "--web-root",
        type=Path,
        default=os.environ.get("SERVERFN_WEB_ROOT"),
        metavar="DIR",
        help="serve the files of DIR (a built UI) at / of the web port, beside the functions"
        " (default: none; env SERVERFN_WEB_ROOT)",
    )
    metrics = serve.add_argument_group("Prometheus metrics (pip install 'grpc-serverfn[metrics]')")
    metrics.add_argument(
        "--metrics-port",
        type=_port_number,
        default=os.environ.get("SERVERFN_METRICS_PORT"),
        metavar="PORT",
        help="serve them over HTTP on this port, 0 for any free one (default: off; env"
        " SERVERFN_METRICS_PORT); with --workers N, worker i serves its own on PORT+i",
    )
    metrics.add_argument("--metrics-host", metavar="HOST", help="address to bind (default: --host)")
    serve.add_argument(
        "--trace",
        action="store_true",
        default=os.environ.get("SERVERFN_TRACE") == "1",
        help="an OpenTelemetry span per call, through the global TracerProvider (serve under"
        " opentelemetry-instrument, or set one up in the app; env SERVERFN_TRACE=1);"
        " pip install 'grpc-serverfn[otel]'",
    )
    streams = serve.add_argument_group("resumable streams (@server_fn(resumable=True))")
    streams.add_argument(
        "--stream-store",
        default=os.environ.get("SERVERFN_STREAM_STORE", "memory"),
        metavar="URL",
        help="where their chunks are kept: 'memory' (this process only; the default) or"
        " redis://host:port/db (shared by every worker and replica using it;"
        " env SERVERFN_STREAM_STORE)",
    )
    streams.add_argument(
        "--stream-idle-ttl",
        type=float,
        default=DEFAULT_IDLE_TTL,
        metavar="SECONDS",
        help=f"a producer with no reader this long is stopped (default {DEFAULT_IDLE_TTL:g})",
    )
    streams.add_argument(
        "--stream-retention",
        type=float,
        default=DEFAULT_RETENTION,
        metavar="SECONDS",
        help=f"a stream is deleted this long after its last chunk (default {DEFAULT_RETENTION:g})",
    )
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    serve.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="every log line as text (the default) or as one JSON object",
    )
    serve.add_argument(
        "--no-call-log",
        dest="call_log",
        action="store_false",
        help="no log line per call (by default each call logs one at its end, at INFO)",
    )
    serve.add_argument(
        "--log-payloads",
        action="store_true",
        help="put each call's input, cut short, in its log line (never logged otherwise)",
    )

    def add_target_options(command: argparse.ArgumentParser, *, required: bool = True) -> None:
        command.add_argument(
            "target",
            metavar="TARGET",
            nargs=None if required else "?",
            help="server address, e.g. localhost:50051",
        )
        command.add_argument("--timeout", type=float, help="deadline in seconds")
        command.add_argument(
            "-H",
            "--header",
            action="append",
            default=[],
            metavar="'KEY: VALUE'",
            help="request metadata; repeat for more",
        )
        tls = command.add_argument_group(
            "TLS",
            "Connect over TLS; --ca, --cert, --key and --server-name imply --tls. A server"
            " started with --tls-client-ca (mutual TLS) refuses clients without --cert/--key.",
        )
        tls.add_argument(
            "--tls", action="store_true", help="connect with TLS, trusting the system's CAs"
        )
        tls.add_argument(
            "--ca", type=Path, metavar="FILE", help="PEM CA bundle to verify the server with"
        )
        tls.add_argument(
            "--cert",
            type=Path,
            metavar="FILE",
            help="PEM client certificate chain to present (mutual TLS; needs --key)",
        )
        tls.add_argument("--key", type=Path, metavar="FILE", help="PEM private key of --cert")
        tls.add_argument(
            "--server-name",
            metavar="NAME",
            help="the name the server's certificate must hold, when not TARGET's host",
        )

    call = commands.add_parser(
        "call",
        help="call a function, one JSON line per chunk",
        description="Call a server function and print one JSON line per chunk.",
    )
    add_target_options(call)
    call.add_argument("function", metavar="FUNCTION")
    call.add_argument(
        "data",
        metavar="JSON",
        nargs="?",
        help="the input as JSON; '-' reads stdin, '@FILE' reads a file",
    )
    call.add_argument(
        "--encoding",
        choices=["json", "value"],
        default="json",
        help="chunk encoding on the wire (default json)",
    )
    progress = call.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="always show a progress bar on stderr",
    )
    progress.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="never show a progress bar (default: only when stdout is a terminal)",
    )

    listing = commands.add_parser(
        "list",
        help="list the functions a server offers",
        description="List the functions a server offers.",
    )
    add_target_options(listing)
    listing.add_argument("--json", action="store_true", help="print them as one JSON document")

    health = commands.add_parser(
        "health",
        help="check a server's health (exit 0 only when SERVING)",
        description="Ask the standard gRPC health service; exit 0 only when it says SERVING.",
    )
    add_target_options(health)
    health.add_argument(
        "--service", default="", help="the service to ask about (default: the whole server)"
    )

    codegen = commands.add_parser(
        "codegen",
        help="write a typed module for calling a server's functions",
        description="Write a module of typed callers (types and a function per server function)"
        " from the JSON Schemas of a running server's functions (TARGET) or of a Registry (--app)."
        " With --check, write nothing: exit 1 if OUTPUT differs from what would be written.",
    )
    codegen.add_argument("language", choices=sorted(EMITTERS), metavar="LANGUAGE")
    add_target_options(codegen, required=False)
    codegen.add_argument(
        "--app", metavar="MODULE:ATTR", help="read the functions from a Registry, not a server"
    )
    codegen.add_argument(
        "-o", "--output", type=Path, required=True, metavar="FILE", help="the module to write"
    )
    codegen.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 (showing the difference) if FILE is not what would be written",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "call":
            return _call(args)
        if args.command == "health":
            return _health(args)
        if args.command == "codegen":
            return _codegen(args)
        return _list(args)
    except UsageError as error:
        print(f"grpc-serverfn: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except ServerFnError as error:
        _print_error(error, sys.stderr)
        return _STATUS_EXIT_BASE + error.code.value[0]
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`grpc-serverfn call ... | head -1`); the call is already
        # cancelled. Point stdout at /dev/null so the interpreter's final flush stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# With worker processes, every line names the process that wrote it.
_WORKERS_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def _worker_count(text: str) -> int:
    if text == "auto":
        return os.cpu_count() or 1
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(
            f"expected a number of processes (1 or more) or 'auto', not {text!r}"
        )
    return count


def _serve(args: argparse.Namespace) -> int:
    if args.log_format == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(calllog.json_formatter(process=args.workers != 1))
        logging.basicConfig(level=args.log_level, handlers=[handler])
        logging.captureWarnings(True)  # so that warnings are JSON lines too
    else:
        logging.basicConfig(
            level=args.log_level, format=_LOG_FORMAT if args.workers == 1 else _WORKERS_LOG_FORMAT
        )
    if args.log_payloads and not args.call_log:
        raise UsageError("--log-payloads needs the call log: drop --no-call-log")
    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise UsageError("--tls-cert and --tls-key go together")
        tls = _read_tls(ServerTLS.from_files, args.tls_cert, args.tls_key, args.tls_client_ca)
    elif args.tls_client_ca:
        raise UsageError("--tls-client-ca needs --tls-cert and --tls-key")
    try:
        limits = Limits(
            max_message_bytes=args.max_message_bytes,
            max_concurrent_calls=args.max_concurrent_calls,
            max_input_depth=args.max_input_depth,
            max_pending_calls=args.max_pending_calls,
            max_pending_seconds=args.max_pending_seconds,
        )
        streams = StreamOptions(idle_ttl=args.stream_idle_ttl, retention=args.stream_retention)
    except ValueError as error:
        raise UsageError(str(error)) from None
    observers: list[Observer] = []
    if args.call_log:
        observers.append(calllog.CallLog(log_payloads=args.log_payloads))
    if args.trace:
        observers.append(_tracing())
    if args.cors_origin and args.web_port is None:
        raise UsageError("--cors-origin is for the web port: add --web-port")
    if args.web_root is not None:
        if args.web_port is None:
            raise UsageError("--web-root is for the web port: add --web-port")
        if not args.web_root.is_dir():
            raise UsageError(f"--web-root {args.web_root} is not a directory")
    if args.web_port is not None:
        if tls is not None and tls.client_ca is not None:
            raise UsageError(
                "--web-port does not do mutual TLS (--tls-client-ca): terminate it in front"
            )
        try:
            from . import _web  # noqa: F401  (the web extra is there: fail now, not at start)
        except ImportError:
            raise UsageError(
                "--web-port needs the web extra: pip install 'grpc-serverfn[web]'"
            ) from None
    options: ServerOptions = {
        "host": args.host,
        "reflection": args.reflection,
        "tls": tls,
        "grace": args.grace,
        "limits": limits,
        "observers": observers,
    }
    if args.web_port is not None:
        options["cors_origins"] = args.cors_origin
        options["web_root"] = args.web_root
    # A bad URL is a usage error before anything starts; the store is made where it is used.
    make_store = _stream_store_factory(args.stream_store)
    start_metrics = _metrics_starter(args)
    if args.workers == 1:
        registry = load_registry(args.app)
        try:
            options["observers"] = [*observers, *start_metrics(registry, 0)]
        except OSError as error:
            print(f"grpc-serverfn: error: {error}", file=sys.stderr)
            return 1
        options["port"] = args.port
        options["streams"] = replace(streams, store=make_store())
        if args.web_port is not None:
            options["web_port"] = args.web_port
        return _run_server(Server(registry, **options))
    if args.stream_store == "memory":
        logger.warning(
            "each worker keeps its own resumable streams in memory: a resume reaching another"
            " worker finds nothing; use --stream-store redis://... with --workers"
        )
    if not workers.SUPPORTED:
        raise UsageError("--workers needs os.fork and SO_REUSEPORT (Linux)")

    def run_worker(port: int, web_port: int | None, ready: Callable[[], None]) -> int:
        # In the forked worker: the app is imported here, after the fork, so whatever it
        # creates at import time (threads, grpc channels) belongs to this process.
        try:
            registry = load_registry(args.app)
        except UsageError as error:
            print(f"grpc-serverfn: error: {error}", file=sys.stderr)
            return USAGE_ERROR
        try:  # this forked worker's own copy of options
            worker = workers.worker_index() or 0
            options["observers"] = [*observers, *start_metrics(registry, worker)]
        except OSError as error:
            print(f"grpc-serverfn: error: {error}", file=sys.stderr)
            return 1
        options["port"] = port
        if web_port is not None:
            options["web_port"] = web_port  # reserved by the supervisor, shared (SO_REUSEPORT)
        options["streams"] = replace(streams, store=make_store())  # in the worker, after the fork
        options["grpc_options"] = [workers.REUSE_PORT_OPTION]
        return _run_server(workers.WorkerServer(registry, on_serving=ready, **options))

    try:
        return workers.supervise(
            args.workers,
            host=args.host,
            port=args.port,
            web_port=args.web_port,
            run_worker=run_worker,
        )
    except OSError as error:
        print(f"grpc-serverfn: error: {error}", file=sys.stderr)
        return 1


def _tracing() -> Observer:
    try:
        from .tracing import OpenTelemetryTracing
    except ImportError:
        raise UsageError(
            "--trace needs OpenTelemetry: pip install 'grpc-serverfn[otel]'"
            " (and the SDK and an exporter to send the spans somewhere)"
        ) from None
    return OpenTelemetryTracing()


def _port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number (0 to 65535), not {text!r}")
    return port


def _metrics_starter(args: argparse.Namespace) -> Callable[[Registry, int], list[Observer]]:
    """``--metrics-port``, checked before anything starts: ``start(registry, worker)`` then
    serves the metrics from the serving process (worker i on PORT+i) and gives its observers.

    Each worker has a port of its own because its counters are its own: one port shared by
    SO_REUSEPORT would show whichever worker took the scrape.
    """
    port: int | None = args.metrics_port
    if port is None:
        if args.metrics_host is not None:
            raise UsageError("--metrics-host needs --metrics-port")
        return lambda registry, worker: []
    try:
        from .metrics import MetricsEndpoint, PrometheusMetrics
    except ImportError:
        raise UsageError(
            "--metrics-port needs prometheus-client: pip install 'grpc-serverfn[metrics]'"
        ) from None
    host: str = args.host if args.metrics_host is None else args.metrics_host
    last = port + args.workers - 1
    if port and last > 65535:
        raise UsageError(f"--metrics-port {port} with --workers {args.workers} runs past 65535")
    if port and port <= args.port <= last:
        taken = f"port {port}" if last == port else f"ports {port}-{last}"
        raise UsageError(f"--metrics-port takes {taken}, which holds --port {args.port}")

    def start(registry: Registry, worker: int) -> list[Observer]:
        # Zeroed series for the protocols this server serves: the web port's too, with one.
        protocols = PROTOCOLS if args.web_port is not None else ("grpc",)
        metrics = PrometheusMetrics(registry, process_metrics=True, protocols=protocols)
        endpoint = MetricsEndpoint(metrics.registry, host=host, port=port + worker if port else 0)
        which = f"worker {worker} " if args.workers > 1 else ""
        logger.info("%sserving Prometheus metrics on %s", which, endpoint.url)
        return [metrics]

    return start


def _stream_store_factory(url: str) -> Callable[[], StreamStore | None]:
    if url == "memory":
        return lambda: None  # the server's default, MemoryStreamStore
    if url.startswith(("redis://", "rediss://", "unix://")):
        try:
            from .redis_store import RedisStreamStore
        except ImportError:
            raise UsageError(
                "--stream-store redis://... needs redis-py: pip install 'grpc-serverfn[redis]'"
            ) from None
        return lambda: RedisStreamStore(url)
    raise UsageError(f"--stream-store must be 'memory' or a redis:// URL, not {url!r}")


def _run_server(server: Server) -> int:
    try:
        status = asyncio.run(server.serve_until_signalled())
    except OSError as error:
        print(f"grpc-serverfn: error: {error}", file=sys.stderr)
        return 1
    # A sync handler still blocked in a worker thread would hold the interpreter open forever.
    if any(t.name.startswith("serverfn-worker") and t.is_alive() for t in threading.enumerate()):
        logging.getLogger("grpc_serverfn.server").warning(
            "worker threads still busy; exiting anyway"
        )
        logging.shutdown()
        os._exit(status)
    return status


def _client(args: argparse.Namespace, **options: Any) -> Client:
    metadata = []
    for header in args.header:
        key, separator, value = header.partition(":")
        if not separator or not key.strip():
            raise UsageError(f"header {header!r} is not 'KEY: VALUE'")
        metadata.append((key.strip().lower(), value.strip()))
    tls = None
    if bool(args.cert) != bool(args.key):
        raise UsageError("--cert and --key go together")
    if args.tls or args.ca or args.cert or args.server_name:
        tls = _read_tls(ClientTLS.from_files, args.ca, args.cert, args.key, args.server_name)
    return Client(args.target, tls=tls, timeout=args.timeout, metadata=metadata, **options)


def _read_tls(load: Callable[..., _TLS], *arguments: Any) -> _TLS:
    """``ServerTLS`` / ``ClientTLS.from_files``, an unreadable file being a usage error."""
    try:
        return load(*arguments)
    except OSError as error:
        raise UsageError(f"cannot read {error.filename}: {error.strerror}") from None


def _read_input(argument: str | None) -> Any:
    if argument is None:
        return None
    text = argument
    if argument == "-":
        text = sys.stdin.read()
    elif argument.startswith("@"):
        try:
            text = Path(argument[1:]).read_text()
        except OSError as error:
            raise UsageError(f"cannot read {argument[1:]}: {error.strerror}") from None
    try:
        return codec.decode_json(text)
    except codec.JSONDecodeError as error:
        raise UsageError(f"the input is not valid JSON: {error}") from None


def _call(args: argparse.Namespace) -> int:
    data = _read_input(args.data)
    show_progress = args.progress if args.progress is not None else sys.stdout.isatty()
    bar: _ProgressBar | None = _ProgressBar() if show_progress else None
    out = sys.stdout
    try:
        with _client(args, encoding=args.encoding) as client:
            for chunk in client.invoke(args.function, data):
                if bar is not None:
                    bar.update(chunk)
                out.write(orjson.dumps(chunk).decode() + "\n")
                out.flush()
    finally:
        if bar is not None:
            bar.close()
    return 0


class _ProgressBar:
    """A tqdm bar on stderr, driven by chunks that carry ``percent`` or ``processed``/``total``."""

    def __init__(self) -> None:
        self._bar: tqdm[Any] | None = None

    def update(self, chunk: Any) -> None:
        if not isinstance(chunk, dict):
            return
        if isinstance(chunk.get("processed"), int | float) and isinstance(
            chunk.get("total"), int | float
        ):
            done, total = chunk["processed"], chunk["total"]
        elif isinstance(chunk.get("percent"), int | float):
            done, total = chunk["percent"], 100
        elif isinstance(chunk.get("progress"), int | float):
            done, total = chunk["progress"], 100
        else:
            return
        if self._bar is None:
            self._bar = tqdm(total=total, file=sys.stderr, dynamic_ncols=True, leave=True)
        self._bar.total = total
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        functions = client.functions()
    if args.json:
        listing = [
            {
                "name": info.name,
                "description": info.description,
                "streaming": info.streaming,
                "method": info.method,
                "takes_input": info.takes_input,
                "input_required": info.input_required,
                "input_schema": info.input_schema,
                "output_schema": info.output_schema,
                "resumable": info.resumable,
            }
            for info in functions
        ]
        print(orjson.dumps(listing, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
        return 0
    for info in functions:
        kind = "stream" if info.streaming else "unary"
        flags = " resumable" if info.resumable else ""
        print(f"{info.name}  {info.method} {kind}{flags}")
        if info.description:
            first_line = info.description.splitlines()[0]
            print(f"    {first_line}")
        if info.input_schema is not None:
            print(f"    input:  {_compact(info.input_schema)}")
        if info.output_schema is not None:
            print(f"    output: {_compact(info.output_schema)}")
    return 0


def _health(args: argparse.Namespace) -> int:
    with _client(args) as client:
        status = client.health(args.service, timeout=args.timeout or 5.0)
    print(status)
    if status != "SERVING":
        print(f"grpc-serverfn: {args.target} is not serving ({status})", file=sys.stderr)
        return 1
    return 0


def _codegen(args: argparse.Namespace) -> int:
    if (args.target is None) == (args.app is None):
        raise UsageError(
            "codegen reads a running server (TARGET) or a Registry (--app), one of them"
        )
    if args.app is not None:
        functions = codegen.from_registry(load_registry(args.app))
    else:
        with _client(args) as client:
            functions = codegen.from_server(client)
    try:
        text = codegen.generate(args.language, functions)
    except ImportError as error:
        raise UsageError(
            f"codegen {args.language} needs the codegen extra ({error.name} is missing):"
            " pip install 'grpc-serverfn[codegen]'"
        ) from None
    except codegen.CodegenError as error:
        print(f"grpc-serverfn: codegen {args.language}: {error}", file=sys.stderr)
        return 1
    output: Path = args.output
    if not args.check:
        output.write_text(text)
        print(f"wrote {output} ({len(functions)} function(s))", file=sys.stderr)
        return 0
    try:
        written = output.read_text()
    except FileNotFoundError:
        print(
            f"grpc-serverfn: {output} does not exist; run codegen without --check", file=sys.stderr
        )
        return 1
    if written == text:
        print(f"{output} is up to date", file=sys.stderr)
        return 0
    difference = difflib.unified_diff(
        written.splitlines(keepends=True),
        text.splitlines(keepends=True),
        f"{output} (written)",
        f"{output} (from the server now)",
    )
    sys.stderr.writelines(itertools.islice(difference, _MAX_DIFF_LINES))
    print(
        f"grpc-serverfn: {output} is out of date: run the same codegen command without --check",
        file=sys.stderr,
    )
    return 1


_MAX_DIFF_LINES = 200


def _compact(schema: dict[str, Any]) -> str:
    return orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode()


def _print_error(error: ServerFnError, stream: TextIO) -> None:
    print(f"error: {error.code.name}: {error.message}", file=stream)
    for field, description in error.field_violations:
        print(f"  {field or '(input)'}: {description}", file=stream)
    for detail in error.details:
        kind = type(detail).__name__
        if kind != "BadRequest":
            print(f"  {kind}: {detail}".rstrip(), file=stream)


if __name__ == "__main__":
    sys.exit(main())
