"""Server processes: start one (``python -m benchmarks.serve KIND``), read its port, measure it
through ``/proc``, and always stop it.

A server with worker processes (``serverfn-workers``) prints each worker's pid as it starts
serving; its CPU time is the sum over the supervisor and the workers.

Each server runs in its own session (so a Ctrl-C in the terminal reaches only the benchmark,
which then stops them) with its stdin on a pipe (so it exits by itself if the benchmark dies).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Protocol

from .serve import READY_PREFIX, WEB_PORT_PREFIX, WORKER_PREFIX

__all__ = ["HOST", "ROOT", "Address", "Endpoint", "ServerProcess", "running"]

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_START_SECONDS = 30.0
_STOP_SECONDS = 5.0


class Address(Protocol):
    """Where a server listens: what a driver needs to call it."""

    @property
    def address(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def web_url(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A server's ports as plain data (an ``Address``), for another process to call it."""

    kind: str
    port: int
    web_port: int | None = None

    @property
    def address(self) -> str:
        """``host:port``, for grpcio channels."""
        return f"{HOST}:{self.port}"

    @property
    def web_url(self) -> str:
        """``http://host:port`` of the web port."""
        if self.web_port is None:
            raise RuntimeError(f"the {self.kind} server has no web port")
        return f"http://{HOST}:{self.web_port}"


def _process_cpu_clock(pid: int) -> int | None:
    """The kernel's CPU-time clock of process ``pid`` (clock_getcpuclockid), or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        clock = ctypes.c_int()
        if libc.clock_getcpuclockid(pid, ctypes.byref(clock)) != 0:
            return None
        time.clock_gettime_ns(clock.value)  # can this process read it?
    except (OSError, AttributeError):
        return None
    return clock.value


def _proc_stat_cpu_seconds(pid: int) -> float:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _CLOCK_TICKS


def _cpu_seconds(pid: int, clock: int | None) -> float:
    if clock is not None:
        try:
            return time.clock_gettime_ns(clock) / 1e9
        except OSError:
            pass
    return _proc_stat_cpu_seconds(pid)


class ServerProcess:
    """One benchmark server in a child process; use as a context manager or ``stop()`` it."""

    def __init__(
        self,
        kind: str,
        *,
        wrapper: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        start_seconds: float = _START_SECONDS,
        stop_seconds: float = _STOP_SECONDS,
    ) -> None:
        """``wrapper`` goes before the command (e.g. valgrind); ``env`` replaces the
        environment; a slow wrapper needs longer to start and to stop."""
        self.kind = kind
        self.web_port: int | None = None
        """The web port (Connect, gRPC-Web) of a server that has one."""
        self.worker_pids: list[int] = []
        """The worker processes of a server that has them (``serverfn-workers``)."""
        self._stop_seconds = stop_seconds
        self._log: IO[bytes] = tempfile.TemporaryFile(prefix=f"bench-{kind}-")  # noqa: SIM115 - closed by stop()
        self._process = subprocess.Popen(
            [*wrapper, sys.executable, "-m", "benchmarks.serve", kind],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
        )
        try:
            self.port = self._read_port(start_seconds)
        except BaseException:
            self.stop()
            raise
        self._cpu_clock = _process_cpu_clock(self.pid)
        self._worker_clocks = [_process_cpu_clock(pid) for pid in self.worker_pids]
        self.cpu_source = (
            "clock_getcpuclockid(pid): user+system time of all its threads, ns resolution"
            if self._cpu_clock is not None and None not in self._worker_clocks
            else f"/proc/PID/stat utime+stime ({1000 // _CLOCK_TICKS} ms clock ticks)"
        )
        """Where ``cpu_seconds`` comes from."""

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def address(self) -> str:
        """``host:port``, for grpcio channels."""
        return self.endpoint().address

    @property
    def web_url(self) -> str:
        """``http://host:port`` of the web port."""
        return self.endpoint().web_url

    def endpoint(self) -> Endpoint:
        """Its ports, to be sent to another process."""
        return Endpoint(self.kind, self.port, self.web_port)

    def _read_port(self, seconds: float) -> int:
        """Read the server's lines until ``PORT <n>``. From the file descriptor itself: a
        buffered ``readline`` can take the next line into its buffer, where the selector does
        not see it (``WEB_PORT`` and ``PORT`` often arrive together)."""
        stdout = self._process.stdout
        assert stdout is not None
        fd = stdout.fileno()
        deadline = time.monotonic() + seconds
        pending = b""
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while (remaining := deadline - time.monotonic()) > 0:
                if not selector.select(remaining):
                    continue
                data = os.read(fd, 4096)
                pending += data
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace").strip()
                    if line.startswith(WEB_PORT_PREFIX):
                        self.web_port = int(line.removeprefix(WEB_PORT_PREFIX))
                    elif line.startswith(WORKER_PREFIX):
                        self.worker_pids.append(int(line.removeprefix(WORKER_PREFIX)))
                    elif line.startswith(READY_PREFIX):
                        return int(line.removeprefix(READY_PREFIX))
                if not data:  # end of file: it exited, or closed its stdout
                    break
        raise RuntimeError(f"the {self.kind} server did not start:\n{self.log()}")

    def log(self) -> str:
        """What the server wrote on stderr so far."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def _status(self) -> dict[str, str]:
        text = Path(f"/proc/{self.pid}/status").read_text()
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def rss_kib(self) -> int:
        """Resident memory now (VmRSS), in KiB."""
        return int(self._status()["VmRSS"].split()[0])

    def peak_rss_kib(self) -> int:
        """Peak resident memory so far (VmHWM), in KiB."""
        return int(self._status()["VmHWM"].split()[0])

    def cpu_seconds(self) -> float:
        """CPU time used so far, user plus system, from the process's CPU clock (the
        ``sum_exec_runtime`` that utime + stime are made from, in ns) or else /proc; with
        worker processes, the sum over the supervisor and its workers."""
        return _cpu_seconds(self.pid, self._cpu_clock) + sum(self.worker_cpu_seconds())

    def worker_cpu_seconds(self) -> list[float]:
        """Each worker process's CPU time so far (none without workers)."""
        return [
            _cpu_seconds(pid, clock)
            for pid, clock in zip(self.worker_pids, self._worker_clocks, strict=True)
        ]

    def proc_stat_cpu_seconds(self) -> float:
        """CPU time used so far: utime + stime from /proc/PID/stat (clock ticks, 10 ms)."""
        return _proc_stat_cpu_seconds(self.pid)

    def alive(self) -> bool:
        return self._process.poll() is None

    def stop(self) -> None:
        """Stop the server: close its stdin, SIGTERM, then SIGKILL if it does not exit."""
        process = self._process
        if process.poll() is None:
            with contextlib.suppress(OSError):
                if process.stdin is not None:
                    process.stdin.close()
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(self._stop_seconds)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._log.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def running(*kinds: str) -> Iterator[dict[str, ServerProcess]]:
    """Start one server process per kind; stop them all on the way out, whatever happens."""
    with contextlib.ExitStack() as stack:
        yield {kind: stack.enter_context(ServerProcess(kind)) for kind in kinds}
