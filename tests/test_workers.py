"""``grpc-serverfn serve --workers N``: worker processes on one port, and their supervisor.

Every test runs the real console script; the workers are real forked processes, found by the
pid that ``tests.app:pid`` returns and checked in /proc.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyqwest import Client as HTTPClient
from pyqwest import HTTPTransport

from grpc_serverfn import Client, ServerFnError
from grpc_serverfn._proto.serverfn.v1.serverfn_connect import ServerFunctionsClient
from tests.processes import (
    PROMPTLY,
    ROOT,
    SCRIPT,
    SERVING,
    ServerProcess,
    run_cli,
    server_env,
    serving,
)
from tests.test_web import collect, request

APP = "tests.app:fns"
ANNOUNCED = re.compile(
    r"grpc-serverfn: (\d+) worker processes serving on (127\.0\.0\.1:\d+)"
    r" \(pids ([\d, ]+); supervisor pid (\d+)\)"
)
STARTUP_ATTEMPTS = 3  # grpc_serverfn._workers.STARTUP_ATTEMPTS, as a user reads it in the log


@contextlib.contextmanager
def supervisor(*args: str, env: dict[str, str] | None = None) -> Iterator[Workers]:
    """``serve APP --port 0 ARGS`` running until every worker serves."""
    with serving(APP, "--port", "0", *args, env=env) as server:
        yield Workers.of(server)


class Workers:
    """A running supervisor: the address and worker pids it announced, and its process."""

    def __init__(self, line: str, supervisor_pid: int, server: ServerProcess | None = None):
        match = ANNOUNCED.search(line)
        assert match is not None, line
        assert int(match.group(4)) == supervisor_pid
        self.count = int(match.group(1))
        self.address = match.group(2)
        self.pids = {int(pid) for pid in match.group(3).split(", ")}
        self._server = server

    @classmethod
    def of(cls, server: ServerProcess) -> Workers:
        """Wait until every worker of ``server`` serves."""
        return cls(server.wait_for_line(ANNOUNCED), server.pid, server)

    @property
    def server(self) -> ServerProcess:
        assert self._server is not None
        return self._server

    def client(self) -> Client:
        """A client with its own connection: channels otherwise share grpc's global pool."""
        return Client(
            self.address, timeout=PROMPTLY, options=[("grpc.use_local_subchannel_pool", 1)]
        )

    def pid_of_a_new_connection(self) -> int:
        with self.client() as client:
            pid: int = client.call("pid")
        return pid

    def stop(self) -> int:
        self.server.signal(signal.SIGTERM)
        return self.server.wait(PROMPTLY)


def running(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def test_connections_are_spread_over_both_workers_and_each_serves_health() -> None:
    with supervisor("--workers", "2") as workers:
        assert workers.count == 2
        assert len(workers.pids) == 2
        assert workers.server.pid not in workers.pids
        assert all(parent_of(pid) == workers.server.pid for pid in workers.pids)

        served: collections.Counter[int] = collections.Counter()
        healthy: set[int] = set()
        for _ in range(40):
            with workers.client() as client:
                pid = client.call("pid")
                served[pid] += 1
                if client.health() == "SERVING":
                    healthy.add(pid)  # asked on the same connection, so of the same worker
        assert set(served) == workers.pids, served
        assert healthy == workers.pids

        # One port for all: each worker's own serving line names the announced address,
        # and the supervisor announces it once.
        serving_lines = [SERVING.search(line) for line in workers.server.lines]
        assert {m.group(2) for m in serving_lines if m} == {workers.address}
        assert len([line for line in workers.server.lines if ANNOUNCED.search(line)]) == 1
        for pid in workers.pids:
            assert re.search(rf"\[{pid}\]: grpc-serverfn serving", workers.server.log)

        assert workers.stop() == 0, workers.server.log


BROWSERS = re.compile(r"and to browsers on (http://127\.0\.0\.1:\d+)")


async def test_the_web_port_is_shared_by_the_workers_as_the_grpc_port_is() -> None:
    """``--workers 2 --web-port 0``: one web port for both workers, and web calls over new
    connections reach both, as gRPC calls do."""
    with supervisor("--workers", "2", "--web-port", "0") as workers:
        announced = [line for line in workers.server.lines if ANNOUNCED.search(line)]
        found = BROWSERS.search(announced[0])
        assert found is not None, announced
        url = found.group(1)
        assert url.rsplit(":", 1)[1] != workers.address.rsplit(":", 1)[1]
        log = workers.server.log
        for pid in workers.pids:
            assert re.search(rf"\[{pid}\]: .*serving them to browsers on {url} ", log), log

        served: collections.Counter[int] = collections.Counter()
        # No idle connection is kept, so each call opens one of its own (pyqwest otherwise
        # shares one pool between every client).
        async with HTTPTransport(pool_max_idle_per_host=0) as transport:
            http_client = HTTPClient(transport)
            async with ServerFunctionsClient(url, http_client=http_client) as client:
                for _ in range(40):
                    chunks, error = await collect(client, request("pid"))
                    assert error is None
                    [pid] = [json.loads(chunk.json) for chunk in chunks]
                    served[pid] += 1
        assert set(served) == workers.pids, served
        assert await asyncio.to_thread(workers.stop) == 0, workers.server.log


def test_a_killed_worker_leaves_the_other_serving_and_is_replaced() -> None:
    with supervisor("--workers", "2") as workers:
        victim, survivor = sorted(workers.pids)
        with contextlib.ExitStack() as stack:
            # A stream in flight on the survivor while the other worker dies.
            for _ in range(200):
                client = stack.enter_context(workers.client())
                stream = client.invoke("pid_then_wait", 1.0)
                if next(stream) == survivor:
                    break
                stream.cancel()
            else:
                pytest.fail("no connection reached the survivor")

            os.kill(victim, signal.SIGKILL)
            workers.server.wait_for_line(
                rf"worker pid {victim} was killed by SIGKILL unexpectedly;"
                r" starting a replacement"
            )
            assert not running(victim)
            for _ in range(10):
                assert workers.pid_of_a_new_connection() != victim
            assert list(stream) == [survivor]

        line = workers.server.wait_for_line(rf"worker pid (\d+) serves in place of pid {victim}")
        match = re.search(r"worker pid (\d+) serves", line)
        assert match is not None
        replacement = int(match.group(1))
        assert replacement not in workers.pids
        assert parent_of(replacement) == workers.server.pid

        seen: set[int] = set()
        for _ in range(200):
            seen.add(workers.pid_of_a_new_connection())
            if seen == {survivor, replacement}:
                break
        assert seen == {survivor, replacement}

        assert workers.stop() == 0, workers.server.log
        assert not running(survivor)
        assert not running(replacement)


def open_stream_on_each_worker(
    workers: Workers, stack: contextlib.ExitStack, seconds: float
) -> dict[int, Iterator[int]]:
    """One ``pid_then_wait(seconds)`` stream in flight on every worker, by pid."""
    streams: dict[int, Iterator[int]] = {}
    for _ in range(200):
        client = stack.enter_context(workers.client())
        stream = client.invoke("pid_then_wait", seconds)
        pid = next(stream)
        if pid in streams:
            stream.cancel()
        else:
            streams[pid] = stream
        if set(streams) == workers.pids:
            return streams
    pytest.fail(f"streams reached only {set(streams)} of {workers.pids}")


def test_sigterm_drains_every_worker_then_exits_0_leaving_no_process() -> None:
    with supervisor("--workers", "2", "--grace", "10") as workers, contextlib.ExitStack() as stack:
        streams = open_stream_on_each_worker(workers, stack, 1.0)
        workers.server.signal(signal.SIGTERM)
        for pid in workers.pids:
            workers.server.wait_for_line(rf"\[{pid}\]: SIGTERM received: shutting down")
        # The calls in flight finish within the grace, on both workers.
        for pid, stream in streams.items():
            assert list(stream) == [pid]
        assert workers.server.wait(PROMPTLY) == 0, workers.server.log
        for pid in workers.pids:
            assert not running(pid)
            assert re.search(rf"\[{pid}\]: grpc-serverfn stopped", workers.server.log)
            assert f"worker pid {pid} exited with status 0" in workers.server.log
        assert "every worker exited cleanly" in workers.server.log
        assert "replacement" not in workers.server.log


def test_a_second_sigterm_stops_the_workers_at_once() -> None:
    with supervisor("--workers", "2", "--grace", "60") as workers, contextlib.ExitStack() as stack:
        streams = open_stream_on_each_worker(workers, stack, 60.0)
        workers.server.signal(signal.SIGTERM)
        for pid in workers.pids:
            workers.server.wait_for_line(rf"\[{pid}\]: SIGTERM received: shutting down")
        started = time.monotonic()
        workers.server.signal(signal.SIGTERM)
        assert workers.server.wait(PROMPTLY) == 128 + signal.SIGTERM, workers.server.log
        assert time.monotonic() - started < 30  # far less than the 60 s grace
        assert "SIGTERM received again: stopping the workers now" in workers.server.log
        for pid, stream in streams.items():
            assert not running(pid)
            with pytest.raises(ServerFnError):
                list(stream)


def test_workers_auto_starts_one_per_cpu() -> None:
    with supervisor("--workers", "auto") as workers:
        assert workers.count == len(workers.pids) == os.cpu_count()
        assert workers.stop() == 0, workers.server.log


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("serve", *args)


@pytest.mark.parametrize("value", ["0", "-2", "x", "1.5", ""])
def test_a_bad_worker_count_is_a_usage_error(value: str) -> None:
    result = run_serve(APP, "--port", "0", "--workers", value)
    assert result.returncode == 2
    assert (
        f"argument --workers: expected a number of processes (1 or more) or 'auto', not {value!r}"
        in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert "serving" not in result.stderr


def test_an_app_that_cannot_load_fails_once_as_with_one_process() -> None:
    result = run_serve("tests.no_such_app:fns", "--port", "0", "--workers", "2")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("error: no module named 'tests.no_such_app'") == 1, result.stderr
    assert "replacement" not in result.stderr
    single = run_serve("tests.no_such_app:fns", "--port", "0")
    assert single.returncode == 2
    assert "error: no module named 'tests.no_such_app'" in single.stderr


def test_a_port_another_supervisor_holds_is_refused() -> None:
    with supervisor("--workers", "2") as first:
        port = first.address.rpartition(":")[2]
        result = run_serve(APP, "--port", port, "--workers", "2")
        assert result.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}: the address is in use" in result.stderr
        # The first one still has the port to itself.
        assert {first.pid_of_a_new_connection() for _ in range(20)} <= first.pids
        assert first.stop() == 0, first.server.log


def test_a_web_port_in_use_is_refused_before_any_worker_starts() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_serve(APP, "--port", "0", "--workers", "2", "--web-port", str(port))
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port} (web): the address is in use" in result.stderr
    assert "serving" not in result.stderr


def test_replacements_that_keep_failing_at_startup_make_it_give_up(tmp_path: Path) -> None:
    marker = tmp_path / "broken"
    app = tmp_path / "fragile_app.py"
    app.write_text(
        textwrap.dedent(
            """
            import os

            from grpc_serverfn import Registry

            if os.path.exists(os.environ["FRAGILE_MARKER"]):
                raise RuntimeError("this app is broken now")

            fns = Registry()


            @fns.server_fn
            def pid() -> int:
                return os.getpid()
            """
        )
    )
    env = server_env(FRAGILE_MARKER=str(marker))
    with serving(f"{app}:fns", "--port", "0", "--workers", "2", env=env) as server:
        workers = Workers.of(server)
        marker.touch()
        victim, survivor = sorted(workers.pids)
        os.kill(victim, signal.SIGKILL)
        assert server.wait(PROMPTLY) == 1, server.log
        log = server.log
        assert log.count("RuntimeError: this app is broken now") == STARTUP_ATTEMPTS
        assert len(re.findall(r"started worker pid \d+ in place of", log)) == STARTUP_ATTEMPTS
        assert f"{STARTUP_ATTEMPTS} workers in a row died before serving" in log
        assert "giving up" in log
        # The worker that was fine was drained and stopped, not left behind.
        assert f"worker pid {survivor} exited with status 0" in log
        assert not running(survivor)


def test_workers_do_not_outlive_a_killed_supervisor() -> None:
    with supervisor("--workers", "2") as workers:
        workers.server.kill()  # SIGKILL: the supervisor cannot forward anything
        deadline = time.monotonic() + PROMPTLY
        while any(running(pid) for pid in workers.pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(running(pid) for pid in workers.pids), workers.server.log
        # Each was told by the kernel (SIGTERM) and drained as usual.
        for pid in workers.pids:
            assert re.search(rf"\[{pid}\]: grpc-serverfn stopped", workers.server.log)


def test_ctrl_c_in_a_terminal_drains_the_workers_like_sigterm(tmp_path: Path) -> None:
    # A terminal's Ctrl-C sends SIGINT to its whole foreground process group; the workers sit
    # in their own groups, so they get only the supervisor's one SIGTERM, and drain.
    stderr_path = tmp_path / "stderr"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [SCRIPT, "serve", APP, "--port", "0", "--workers", "2"],
            cwd=ROOT,
            env=server_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # its own process group, as a shell gives a foreground job
        )
    try:
        deadline = time.monotonic() + PROMPTLY
        while not ANNOUNCED.search(stderr_path.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        line = next(x for x in stderr_path.read_text().splitlines() if ANNOUNCED.search(x))
        workers = Workers(line, process.pid)
        pids = workers.pids
        assert all(os.getpgid(pid) != process.pid for pid in pids)
        with contextlib.ExitStack() as stack:
            streams = open_stream_on_each_worker(workers, stack, 1.0)
            os.killpg(process.pid, signal.SIGINT)
            for pid, stream in streams.items():
                assert list(stream) == [pid]
            assert process.wait(PROMPTLY) == 0, stderr_path.read_text()
        log = stderr_path.read_text()
        assert "SIGINT received: stopping 2 worker(s)" in log
        assert "received again" not in log
        for pid in pids:
            assert not running(pid)
            assert f"worker pid {pid} exited with status 0" in log
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(PROMPTLY)


def test_a_client_with_several_channels_spreads_its_calls_over_the_workers() -> None:
    """One Client, one connection per channel: with channels=16 its calls reach both workers
    (the kernel balances connections, so one channel would stay on one worker)."""
    with supervisor("--workers", "2") as workers:
        with Client(workers.address, timeout=PROMPTLY) as single:
            assert len({single.call("pid") for _ in range(20)}) == 1
        with Client(workers.address, timeout=PROMPTLY, channels=16) as spread:
            served = collections.Counter(spread.call("pid") for _ in range(48))
        # 16 connections land on both workers unless the kernel sends all 16 to one (a
        # 1-in-32,768 chance with an even split); each channel gets 3 of the 48 calls.
        assert set(served) == workers.pids, served
        assert sum(served.values()) == 48
        assert workers.stop() == 0, workers.server.log
