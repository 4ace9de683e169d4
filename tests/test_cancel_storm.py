"""A storm of cancellations: 1,000 streams ended at random points by client cancel, by leaving
the loop, or by a deadline. Every handler's cleanup runs, and the server keeps serving."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid

import pytest

from grpc_serverfn import AsyncClient, ServerFnError
from grpc_serverfn.testing import RunningServer
from tests import app

STREAMS = 1_000
FUNCTIONS = ["wait_async", "sync_endless", "endless"]

pytestmark = pytest.mark.load


async def storm(target: str, rng: random.Random) -> list[str]:
    keys = [uuid.uuid4().hex for _ in range(STREAMS)]
    clients = [AsyncClient(target) for _ in range(8)]

    async def one(index: int, key: str) -> None:
        client = clients[index % len(clients)]
        function = FUNCTIONS[index % len(FUNCTIONS)]
        how = rng.choice(["cancel", "break", "deadline"])
        read_before = rng.randrange(1, 4)
        timeout = rng.uniform(0.05, 0.5) if how == "deadline" else 60
        stream = client.invoke(function, {"probe": key, "chunks": 5}, timeout=timeout)
        try:
            for _ in range(read_before if how != "deadline" else 10_000):
                await anext(stream)
        except (ServerFnError, StopAsyncIteration):
            pass  # a deadline, or the stream ended
        if how == "cancel":
            stream.cancel()
        del stream  # "break": the dropped stream cancels its call

    try:
        await asyncio.gather(*(one(index, key) for index, key in enumerate(keys)))
    finally:
        for client in clients:
            await client.aclose()
    return keys


def test_every_handler_cleans_up_after_a_storm_of_cancellations(server: RunningServer) -> None:
    keys = asyncio.run(storm(server.target, random.Random(7)))
    # A call whose deadline passed before its handler started has nothing to clean up; every
    # handler that did start must have run its cleanup, promptly, all 1,000 together.
    started = [key for key in keys if app.probe(key).started.is_set()]
    assert len(started) > STREAMS // 2  # the rest were deadlines that passed first
    deadline = time.monotonic() + 15
    missing = [
        key
        for key in started
        if not app.probe(key).cleaned_up.wait(max(0.0, deadline - time.monotonic()))
    ]
    assert not missing, f"{len(missing)} of {len(started)} started handlers never cleaned up"
    # The server is still serving, and no sync generator keeps producing.
    produced = {key: app.probe(key).produced for key in keys}
    threading.Event().wait(0.2)
    assert produced == {key: app.probe(key).produced for key in keys}


def test_the_server_serves_normally_after_the_storm(server: RunningServer) -> None:
    async def call() -> list[int]:
        async with AsyncClient(server.target) as client:
            return [chunk async for chunk in client.invoke("count_async", {"n": 100})]

    assert asyncio.run(call()) == list(range(100))
