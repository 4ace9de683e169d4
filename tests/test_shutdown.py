"""SIGTERM with 100 streams in flight, against a server process: health turns NOT_SERVING, new
calls are refused, streams that finish within the grace are delivered whole, the rest are
cancelled with their cleanup run, and the process exits 0 soon after the grace."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from grpc_serverfn import AsyncClient, ServerFnError, Unavailable
from tests.processes import ServerProcess, serving

ROOT = Path(__file__).resolve().parent.parent
SERVING = re.compile(r"serving \d+ function\(s\) on (127\.0\.0\.1:\d+)")
GRACE = 2.0

pytestmark = pytest.mark.load


async def in_flight_shutdown(server: ServerProcess, target: str) -> dict[str, object]:
    async with (
        AsyncClient(target, coalesce=False) as client,
        grpc.aio.insecure_channel(target) as health_channel,
    ):
        watch = health_pb2_grpc.HealthStub(health_channel).Watch(  # type: ignore[attr-defined]
            health_pb2.HealthCheckRequest(service="")
        )
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING

        async def stream(index: int) -> list[int] | str:
            seconds = 0.5 if index % 2 == 0 else 60  # half finish within the grace
            chunks = []
            try:
                async for chunk in client.invoke(
                    "wait_logged", {"probe": f"s{index}", "seconds": seconds}
                ):
                    chunks.append(chunk)
                    if chunk == 0:
                        started.release()
            except ServerFnError as error:
                return type(error).__name__
            return chunks

        started = asyncio.Semaphore(0)
        tasks = [asyncio.create_task(stream(index)) for index in range(100)]
        for _ in range(100):
            await asyncio.wait_for(started.acquire(), 30)

        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        assert (await asyncio.wait_for(watch.read(), 10)).status == (
            health_pb2.HealthCheckResponse.NOT_SERVING
        )
        refused: object = None
        try:
            # retry=None: the server's own answer. (Made again, the call may reach a server
            # whose grace has run out, and grpc's shutdown cancels it.)
            async with AsyncClient(target, retry=None) as late:
                await late.call("echo_async", "late", timeout=5)
        except Unavailable as error:
            refused = error
        results = await asyncio.gather(*tasks)
        exit_code = await asyncio.to_thread(server.wait, 30)
        return {
            "results": results,
            "refused": refused,
            "exit_code": exit_code,
            "seconds_to_exit": time.monotonic() - signalled,
        }


def test_sigterm_with_a_hundred_streams_in_flight() -> None:
    with serving("tests.app:fns", "--port", "0", "--grace", str(GRACE)) as server:
        target = server.wait_serving()
        outcome = asyncio.run(in_flight_shutdown(server, target))
    log = server.lines
    results = outcome["results"]
    assert isinstance(results, list)
    finished = [result for index, result in enumerate(results) if index % 2 == 0]
    cut = [result for index, result in enumerate(results) if index % 2 == 1]
    assert all(result == [0, 1] for result in finished), finished
    assert all(isinstance(result, str) for result in cut), cut
    assert isinstance(outcome["refused"], Unavailable)
    assert outcome["exit_code"] == 0
    seconds = outcome["seconds_to_exit"]
    assert isinstance(seconds, float)
    print(f"exited {seconds:.2f} s after SIGTERM (grace {GRACE} s)")
    assert seconds < GRACE + 3  # within grace + 1 s here (2.07-2.12 s); the rest is CI slack
    cleaned = {line.rsplit(" ", 1)[1].strip() for line in log if "cleaned up" in line}
    assert cleaned >= {f"s{index}" for index in range(100)}, "some handlers never cleaned up"
