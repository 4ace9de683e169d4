"""The gRPC server: a Registry's functions on grpc.aio, with health, reflection and graceful
shutdown.

``Server`` owns the lifecycle (bind, serve, drain, stop); every call is served by the call
core (``_call.CallCore``) through the grpc.aio transport (``_grpc``), which parses each
request once and hands it over.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Unpack

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ._call import CallCore
from ._grpc import add_to_server
from ._wire import SERVICE_NAME
from .config import Limits, ServerOptions, StreamOptions
from .observe import Observer
from .registry import Registry

if TYPE_CHECKING:
    from ._web import WebServer  # the web extra's; imported only when a web port is asked for

__all__ = ["SERVICE_NAME", "Server", "ServerTLS", "serve"]

logger = logging.getLogger("grpc_serverfn.server")

_CLEANUP_SECONDS = 1.0  # how long shutdown waits for cancelled calls' cleanup
# Between refusing new calls ourselves (UNAVAILABLE, with a message) and grpc's own stop, whose
# refusals can reach a racing caller as CANCELLED.
_DRAIN_SECONDS = 0.1


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
    """A grpc.aio server for one Registry, with health and (by default) reflection, and with
    ``web_port`` the same functions for browsers (Connect and gRPC-Web) in the same event loop.

    ``port=0`` binds an ephemeral port; ``port`` then reads the one bound (``web_port`` alike).
    ``limits`` and ``streams`` group the tunables (``grpc_serverfn.config``); ``ServerOptions``
    documents every keyword.
    """

    # Whether the web port's socket joins others on its port (SO_REUSEPORT): the worker
    # processes' servers (_workers.WorkerServer) share it, as grpc.so_reuseport shares the gRPC
    # port; a lone server must not, or a second one started by mistake would share it silently.
    _share_web_port: ClassVar[bool] = False

    def __init__(
        self,
        registry: Registry,
        *,
        host: str = "127.0.0.1",
        port: int = 50051,
        web_port: int | None = None,
        cors_origins: Sequence[str] = (),
        web_root: str | os.PathLike[str] | None = None,
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
        self._requested_web_port = web_port
        self._cors_origins = tuple(cors_origins)
        if web_port is not None and tls is not None and tls.client_ca is not None:
            raise ValueError(
                "the web port does not do mutual TLS (client_ca): terminate it in front of it"
            )
        if cors_origins and web_port is None:
            raise ValueError("cors_origins is for the web port: set web_port too")
        self._web_root = None if web_root is None else _web_root(web_root, web_port)
        self._reflection = reflection
        self._tls = tls
        self._interceptors = tuple(interceptors)
        self._grpc_options = tuple(grpc_options)
        self._observers = tuple(observers)
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._core: CallCore | None = None
        self._port: int | None = None
        self._web: WebServer | None = None

    @property
    def port(self) -> int:
        """The bound port (after ``start``)."""
        if self._port is None:
            raise RuntimeError("the server has not started")
        return self._port

    @property
    def web_port(self) -> int | None:
        """The web port bound (after ``start``); None without one."""
        if self._port is None:
            raise RuntimeError("the server has not started")
        return None if self._web is None else self._web.port

    @property
    def address(self) -> str:
        """``host:port`` as bound, for clients to dial."""
        return self._host_port(self.port)

    @property
    def web_url(self) -> str:
        """The web port's base URL, ``http://host:port`` (``https://`` with TLS), after
        ``start``, with a web port."""
        port = self.web_port
        if port is None:
            raise RuntimeError("the server has no web port")
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{self._host_port(port)}"

    def _host_port(self, port: int | None) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{port}"

    async def start(self) -> None:
        """Bind, register the services and start serving."""
        if self._server is not None:
            raise RuntimeError("the server has already started")
        limits, streams = self.limits, self.streams
        self._executor = ThreadPoolExecutor(
            max_workers=limits.worker_threads, thread_name_prefix="serverfn-worker"
        )
        core = CallCore(
            self.registry,
            limits=limits,
            streams=streams,
            observers=self._observers,
            executor=self._executor,
        )
        self._core = core
        server = grpc.aio.server(
            interceptors=self._interceptors,
            options=[
                ("grpc.max_receive_message_length", limits.max_message_bytes),
                ("grpc.max_send_message_length", limits.max_message_bytes),
                # Calls received that grpc.aio has not yet taken up (it asks for one per turn
                # of the event loop): past its own soft limit grpc cancels some at random, past
                # the hard one all, and the callers see CANCELLED. One limit, no random drops.
                ("grpc.server.max_pending_requests", limits.max_pending_calls),
                ("grpc.server.max_pending_requests_hard_limit", limits.max_pending_calls),
                ("grpc.server_max_unrequested_time_in_server", limits.max_pending_seconds),
                *self._grpc_options,
                # After the caller's options: grpc takes the first of a repeated option, and
                # worker processes (grpc_serverfn._workers) share their port with so_reuseport 1.
                ("grpc.so_reuseport", 0),
            ],
        )
        verified = self._tls is not None and self._tls.client_ca is not None
        add_to_server(server, core, verified_client_certificates=verified)
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
        web = None
        if self._requested_web_port is not None:
            web = _web_server(
                core,
                host=self.host,
                port=self._requested_web_port,
                read_max_bytes=limits.max_message_bytes,
                cors_origins=self._cors_origins,
                web_root=self._web_root,
                reuse_port=self._share_web_port,
                tls=self._tls,
            )
            await web.start()
        try:
            await server.start()
        except BaseException:
            if web is not None:
                await web.stop(0)
            raise
        self._server = server
        self._web = web
        for service in ("", SERVICE_NAME):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        logger.info(
            "grpc-serverfn serving %d function(s) on %s (%s, reflection %s)",
            len(self.registry),
            self.address,
            "TLS" if self._tls is not None else "insecure",
            "on" if self._reflection else "off",
        )
        if web is not None:
            logger.info(
                "grpc-serverfn serving them to browsers on %s (Connect, gRPC-Web; %s)%s",
                self.web_url,
                "TLS, HTTP/2 and HTTP/1.1" if self._tls is not None else "HTTP/1.1 and h2c",
                "" if self._web_root is None else f", and the files of {self._web_root} at /",
            )

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, refuse new calls, let in-flight calls finish within ``grace``
        seconds (default: the server's), then cancel the rest (their cleanup runs)."""
        if self._server is None:
            return
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        grace = self.grace if grace is None else grace
        if self._core is not None:
            self._core.start_draining()
            await asyncio.sleep(min(_DRAIN_SECONDS, grace))
        if self._core is None:
            await self._server.stop(grace)
        else:
            # Resumable streams' producers get the same grace, then end ABORTED.
            streams = self._core.streams
            await asyncio.gather(
                self._server.stop(grace),
                streams.wait_producers(grace),
                *(() if self._web is None else (self._web.stop(grace),)),
            )
            await streams.stop_producing()
            await streams.store.aclose()
        # grpc has cancelled what outlived the grace; let their cleanup (which may need a
        # worker thread to close a sync generator) finish before the threads go.
        if self._core is not None:
            try:
                await asyncio.wait_for(self._core.wait_until_idle(), _CLEANUP_SECONDS)
            except TimeoutError:
                logger.warning("cleanup of cancelled calls still running after shutdown")
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        if self._core is not None:
            self._core.flush_log()
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


def _web_root(web_root: str | os.PathLike[str], web_port: int | None) -> Path:
    if web_port is None:
        raise ValueError("web_root is for the web port: set web_port too")
    directory = Path(web_root)
    if not directory.is_dir():
        raise ValueError(f"web_root must be a directory that exists, not {os.fspath(web_root)!r}")
    # Absolute now: a later chdir must not move what the port serves.
    return directory.resolve()


def _web_server(
    core: CallCore,
    *,
    host: str,
    port: int,
    read_max_bytes: int,
    cors_origins: Sequence[str],
    web_root: Path | None,
    reuse_port: bool,
    tls: ServerTLS | None,
) -> WebServer:
    try:
        from ._web import WebServer, server_ssl_context
    except ImportError as error:
        raise RuntimeError(
            f"the web port needs the web extra: pip install 'grpc-serverfn[web]' ({error})"
        ) from None
    return WebServer(
        core,
        host=host,
        port=port,
        read_max_bytes=read_max_bytes,
        cors_origins=cors_origins,
        web_root=web_root,
        reuse_port=reuse_port,
        tls=None if tls is None else server_ssl_context(tls.certificate_chain, tls.private_key),
    )


def serve(registry: Registry, **options: Unpack[ServerOptions]) -> int:
    """Serve ``registry`` until SIGTERM/SIGINT (blocking); options are ``Server``'s."""
    server = Server(registry, **options)
    return asyncio.run(server.serve_until_signalled())
