"""Worker processes for ``grpc-serverfn serve --workers N``: one port, N processes, a supervisor.

grpc's own multiprocessing pattern: the parent holds the port with a bound, never listening
``SO_REUSEPORT`` socket (which also picks ``--port 0`` once for all of them) and forks every
worker before any grpc object exists in it; each worker runs its own grpc.aio ``Server`` with
``grpc.so_reuseport`` on that port, and the kernel spreads incoming connections (not calls)
over their listeners. The parent never creates a grpc object, so it can fork a replacement at
any time. A web port (``--web-port``) is shared the same way: the parent reserves it too, and
each worker's web server listens on it with ``SO_REUSEPORT`` (``WorkerServer``).

The supervisor restarts a worker that dies unexpectedly, after a delay that grows while the same
slot keeps dying; it gives up (non-zero exit) when the first worker cannot start at all or
``STARTUP_ATTEMPTS`` replacements in a row die before serving. On SIGTERM or SIGINT it forwards
SIGTERM to every worker, each of which drains with the server's grace, and exits 0 once all
exited cleanly; a second signal forwards SIGTERM again (a worker then exits at once) and kills
whatever is left after ``KILL_AFTER`` seconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any, NoReturn, Unpack

from .config import ServerOptions
from .registry import Registry
from .server import Server

__all__ = [
    "KILL_AFTER",
    "REUSE_PORT_OPTION",
    "STARTUP_ATTEMPTS",
    "SUPPORTED",
    "WorkerServer",
    "reserve_port",
    "supervise",
    "worker_index",
]

logger = logging.getLogger("grpc_serverfn.workers")

SUPPORTED: bool = hasattr(os, "fork") and hasattr(socket, "SO_REUSEPORT")
REUSE_PORT_OPTION: tuple[str, Any] = ("grpc.so_reuseport", 1)
STARTUP_ATTEMPTS = 3  # replacements in a row that die before serving, then the supervisor gives up
KILL_AFTER = 2.0  # seconds between the second signal and SIGKILL for workers still running
_FIRST_DELAY = 0.1  # seconds before a replacement starts
_MAX_DELAY = 5.0
_STABLE_SECONDS = 10.0  # a worker that served this long resets its slot's delay
_POLL_SECONDS = 1.0  # an upper bound on any wait, should a wakeup byte ever be lost
_PR_SET_PDEATHSIG = 1

RunWorker = Callable[[int, int | None, Callable[[], None]], int]
"""``run_worker(port, web_port, ready)``: serve on ``port`` (and ``web_port``, unless None) in
this (forked) process, call ``ready()`` once serving, return the exit status."""

_worker_index: int | None = None


def worker_index() -> int | None:
    """This worker's slot, 0 to N-1, in a process ``supervise`` forked (a replacement takes the
    slot of the worker it replaces); None in any other process."""
    return _worker_index


class WorkerServer(Server):
    """A ``Server`` that calls ``on_serving()`` once it serves: the supervisor's ready signal.
    Its web port, if any, joins the other workers' on the port the supervisor reserved."""

    _share_web_port = True

    def __init__(
        self,
        registry: Registry,
        *,
        on_serving: Callable[[], None],
        **options: Unpack[ServerOptions],
    ) -> None:
        super().__init__(registry, **options)
        self._on_serving = on_serving

    async def start(self) -> None:
        """Start as ``Server.start`` does, then report that this worker serves."""
        await super().start()
        self._on_serving()


def reserve_port(host: str, port: int, *, what: str = "") -> socket.socket:
    """Bind (without listening) a ``SO_REUSEPORT`` socket to ``host:port``; its port is the one
    every worker joins. It never accepts, and holding it keeps the port while workers restart.

    A port some other socket already uses is refused first: with ``SO_REUSEPORT`` alone, a second
    server of the same user would silently share it.
    """
    bind = _host_port(host, port) + what
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise OSError(f"cannot listen on {bind}: {error.strerror}") from None
    probe = socket.socket(family, kind, proto) if port else None
    reservation = socket.socket(family, kind, proto)
    try:
        if probe is not None:
            # SO_REUSEADDR as grpc's listeners have it: a port left in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
            probe.close()
        reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reservation.bind(address)
    except OSError:
        reservation.close()
        raise OSError(f"cannot listen on {bind}: the address is in use or not available") from None
    finally:
        if probe is not None:
            probe.close()
    return reservation


def supervise(
    count: int, *, host: str, port: int, web_port: int | None = None, run_worker: RunWorker
) -> int:
    """Serve with ``count`` worker processes until SIGTERM or SIGINT; the exit status.

    Raises OSError when ``host:port`` (or ``host:web_port``) cannot be reserved.
    """
    with contextlib.ExitStack() as reserved:
        reservation = reserved.enter_context(reserve_port(host, port))
        web = None
        if web_port is not None:
            web = reserved.enter_context(reserve_port(host, web_port, what=" (web)"))
        return _Supervisor(count, host, reservation, web, run_worker).run()


@dataclass
class _Worker:
    slot: int
    pid: int
    ready_fd: int | None  # the read end of the pipe the worker reports "serving" on
    replaces: int | None  # the pid of the worker it replaces
    serving_since: float | None = None


class _Supervisor:
    def __init__(
        self,
        count: int,
        host: str,
        reservation: socket.socket,
        web_reservation: socket.socket | None,
        run_worker: RunWorker,
    ) -> None:
        self._count = count
        self._reservations = [reservation]
        self._port: int = reservation.getsockname()[1]
        self._address = _host_port(host, self._port)
        self._web_port: int | None = None
        self._web_address = ""
        if web_reservation is not None:
            self._reservations.append(web_reservation)
            self._web_port = web_reservation.getsockname()[1]
            self._web_address = f", and to browsers on http://{_host_port(host, self._web_port)}"
        self._run_worker = run_worker
        self._workers: dict[int, _Worker] = {}
        self._delays = [_FIRST_DELAY] * count
        self._restarts: dict[int, tuple[float, int]] = {}  # slot: (when, pid it replaces)
        self._started_all = False
        self._announced = False
        self._ever_served = False
        self._failed_starts = 0
        self._signals_seen = 0
        self._stopping = False
        self._kill_at: float | None = None
        self._status = 0
        self._wake_r, self._wake_w = socket.socketpair()

    def run(self) -> int:
        for end in (self._wake_r, self._wake_w):
            end.setblocking(False)
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
        previous = {signum: signal.signal(signum, _wake_only) for signum in handled}
        previous_fd = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        try:
            self._spawn(0)
            while self._workers or self._restarts:
                self._step()
            if self._status == 0:
                logger.info("grpc-serverfn stopped: every worker exited cleanly")
            else:
                logger.warning("grpc-serverfn stopped, exit status %d", self._status)
            return self._status
        finally:
            # Only reached with workers left when the supervisor itself failed.
            self._signal_all(signal.SIGTERM)
            self._close_parent_fds()
            signal.set_wakeup_fd(previous_fd)
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _step(self) -> None:
        ready_fds = {w.ready_fd: w for w in self._workers.values() if w.ready_fd is not None}
        wake = self._wake_r.fileno()
        readable, _, _ = select.select([wake, *ready_fds], [], [], self._timeout())
        if wake in readable:
            with contextlib.suppress(BlockingIOError):
                for signum in self._wake_r.recv(256):
                    if signum in (signal.SIGTERM, signal.SIGINT):
                        self._on_signal(signum)
        for fd in readable:
            if fd in ready_fds:
                self._on_ready(ready_fds[fd])
        self._reap()
        self._run_timers()

    def _timeout(self) -> float:
        deadlines = [when for when, _ in self._restarts.values()]
        if self._kill_at is not None:
            deadlines.append(self._kill_at)
        return max(0.0, min([time.monotonic() + _POLL_SECONDS, *deadlines]) - time.monotonic())

    def _spawn(self, slot: int, replaces: int | None = None) -> None:
        ready_r, ready_w = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            _worker_main(
                self._run_worker,
                (self._port, self._web_port),
                ready_w,
                parent,
                self._close_parent_fds,
                slot,
            )
        os.close(ready_w)
        with contextlib.suppress(OSError):  # the child does it too; whichever runs first
            os.setpgid(pid, pid)
        self._workers[pid] = _Worker(slot, pid, ready_r, replaces)
        if replaces is not None:
            logger.info("started worker pid %d in place of pid %d", pid, replaces)

    def _close_parent_fds(self) -> None:
        with contextlib.suppress(ValueError):
            signal.set_wakeup_fd(-1)
        self._wake_r.close()
        self._wake_w.close()
        for reservation in self._reservations:
            reservation.close()
        for worker in self._workers.values():
            if worker.ready_fd is not None:
                os.close(worker.ready_fd)
                worker.ready_fd = None

    def _on_ready(self, worker: _Worker) -> None:
        assert worker.ready_fd is not None
        try:
            reported = os.read(worker.ready_fd, 16)
        except OSError:
            reported = b""
        os.close(worker.ready_fd)
        worker.ready_fd = None
        if not reported:
            return  # it died before serving; reaping it tells how
        worker.serving_since = time.monotonic()
        self._ever_served = True
        self._failed_starts = 0
        if not self._started_all and not self._stopping:
            # The first worker serves, so the app loads: start the others.
            self._started_all = True
            for slot in range(1, self._count):
                self._spawn(slot)
        if worker.replaces is not None:
            logger.info("worker pid %d serves in place of pid %d", worker.pid, worker.replaces)
        serving = sorted(w.pid for w in self._workers.values() if w.serving_since is not None)
        if not self._announced and len(serving) == self._count:
            self._announced = True
            logger.info(
                "grpc-serverfn: %d worker processes serving on %s (pids %s; supervisor pid %d)%s",
                self._count,
                self._address,
                ", ".join(map(str, serving)),
                os.getpid(),
                self._web_address,
            )

    def _reap(self) -> None:
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self._workers.pop(pid, None)
            if worker is not None:  # else an orphan reparented to us (as PID 1 in a container)
                self._on_exit(worker, os.waitstatus_to_exitcode(wait_status))

    def _on_exit(self, worker: _Worker, code: int) -> None:
        if worker.ready_fd is not None:
            # Its report may still be in the pipe; a forked grandchild could hold the pipe
            # open, so look without blocking.
            if select.select([worker.ready_fd], [], [], 0)[0]:
                self._on_ready(worker)
            else:
                os.close(worker.ready_fd)
                worker.ready_fd = None
        how = _describe_exit(code)
        if self._stopping:
            # One SIGTERMed before it served had nothing to drain.
            clean = code == 0 or (worker.serving_since is None and code == -signal.SIGTERM)
            log = logger.info if clean else logger.warning
            log("worker pid %d %s", worker.pid, how)
            if not clean and self._status == 0:
                self._status = 1
            return
        now = time.monotonic()
        if worker.serving_since is None:
            self._failed_starts += 1
            if not self._ever_served:
                logger.error("worker pid %d %s before serving; stopping", worker.pid, how)
                self._stop(code if code > 0 else 128 - code)
                return
            if self._failed_starts >= STARTUP_ATTEMPTS:
                logger.error(
                    "%d workers in a row died before serving (the last, pid %d, %s);"
                    " giving up and stopping the others",
                    self._failed_starts,
                    worker.pid,
                    how,
                )
                self._stop(1)
                return
        elif now - worker.serving_since >= _STABLE_SECONDS:
            self._delays[worker.slot] = _FIRST_DELAY
        delay = self._delays[worker.slot]
        self._delays[worker.slot] = min(delay * 2, _MAX_DELAY)
        logger.warning(
            "worker pid %d %s unexpectedly; starting a replacement in %.1fs", worker.pid, how, delay
        )
        self._restarts[worker.slot] = (now + delay, worker.pid)

    def _on_signal(self, signum: int) -> None:
        self._signals_seen += 1
        name = signal.Signals(signum).name
        if self._signals_seen == 1 and not self._stopping:
            logger.info(
                "%s received: stopping %d worker(s), each draining its calls;"
                " send it again to stop them now",
                name,
                len(self._workers),
            )
            self._stop(0)
        elif self._kill_at is None:
            logger.warning("%s received again: stopping the workers now", name)
            self._status = 128 + signum
            self._signal_all(signal.SIGTERM)
            self._kill_at = time.monotonic() + KILL_AFTER

    def _stop(self, status: int) -> None:
        self._stopping = True
        self._status = status
        self._restarts.clear()
        self._signal_all(signal.SIGTERM)

    def _signal_all(self, signum: int) -> None:
        for pid in self._workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _run_timers(self) -> None:
        now = time.monotonic()
        for slot, (when, replaces) in list(self._restarts.items()):
            if when <= now:
                del self._restarts[slot]
                self._spawn(slot, replaces)
        if self._kill_at is not None and now >= self._kill_at and self._workers:
            logger.warning("killing %d worker(s) still running", len(self._workers))
            self._signal_all(signal.SIGKILL)
            self._kill_at = float("inf")


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _wake_only(signum: int, frame: FrameType | None) -> None:
    """A no-op handler: the signal's byte on the wakeup socket is what the supervisor reads."""


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def _worker_main(
    run_worker: RunWorker,
    ports: tuple[int, int | None],
    ready_fd: int,
    parent: int,
    close_parent_fds: Callable[[], None],
    slot: int,
) -> NoReturn:
    """The forked child: never returns into the supervisor's code."""
    global _worker_index
    _worker_index = slot
    status = 1
    try:
        close_parent_fds()
        for signum in (signal.SIGTERM, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        # Its own process group, so a terminal's Ctrl-C reaches only the supervisor, which
        # forwards one SIGTERM: a second signal would make the worker exit without draining.
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
        _exit_with(parent)

        def ready() -> None:
            os.write(ready_fd, b"1")
            os.close(ready_fd)

        status = run_worker(*ports, ready)
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(status)


def _exit_with(parent: int) -> None:
    # Linux sends the worker SIGTERM (so it drains) if the supervisor dies, e.g. by SIGKILL;
    # otherwise an orphan would go on serving the port unsupervised.
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
