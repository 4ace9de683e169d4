"""Replicas behind client-side round-robin: three server processes on three ports, one client
target naming all three (``ipv4:a,b,c``, as a DNS name with several addresses resolves). Calls
spread over every replica; when one is killed, the call in flight there fails with UNAVAILABLE
and every later call is served by the others."""

from __future__ import annotations

import collections
import signal
from collections.abc import Iterator

import pytest

from grpc_serverfn import Client, Unavailable
from tests.processes import ServerProcess, serving

pytestmark = pytest.mark.load
CALLS = 90


@pytest.fixture
def replicas() -> Iterator[list[ServerProcess]]:
    with (
        serving("tests.app:fns", "--port", "0") as first,
        serving("tests.app:fns", "--port", "0") as second,
        serving("tests.app:fns", "--port", "0") as third,
    ):
        servers = [first, second, third]
        for server in servers:
            server.wait_serving()
        yield servers


def target_of(servers: list[ServerProcess]) -> str:
    return "ipv4:" + ",".join(server.address for server in servers)


def test_calls_spread_over_every_replica_and_survive_one_being_killed(
    replicas: list[ServerProcess],
) -> None:
    pids = {server.pid for server in replicas}
    with Client(target_of(replicas)) as client:
        served = collections.Counter(client.call("pid") for _ in range(CALLS))
        assert set(served) == pids
        assert min(served.values()) >= CALLS // 3 - 2  # round-robin, not just "some"

        # One stream in flight on each replica; then one replica dies.
        streams = [client.invoke("pid_then_wait", 2.0) for _ in range(3)]
        first_chunks = {next(stream): stream for stream in streams}
        assert set(first_chunks) == pids
        doomed = replicas[0]
        doomed.signal(signal.SIGKILL)
        doomed.wait(30)
        with pytest.raises(Unavailable):
            list(first_chunks[doomed.pid])
        for pid, stream in first_chunks.items():
            if pid != doomed.pid:
                assert list(stream) == [pid]  # the others' streams finish untouched

        after = collections.Counter(client.call("pid") for _ in range(CALLS))
        assert set(after) == pids - {doomed.pid}
        assert sum(after.values()) == CALLS  # every call succeeded


def test_a_single_address_target_works_as_before(replicas: list[ServerProcess]) -> None:
    with Client(f"dns:///{replicas[1].address}") as client:
        assert {client.call("pid") for _ in range(10)} == {replicas[1].pid}
