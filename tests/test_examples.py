"""The examples run as documented: the client scripts against the demo, and features.py."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest

from grpc_serverfn import Client, NotFound, Unauthenticated
from grpc_serverfn.testing import RunningServer, run_in_thread
from tests.conftest import EXAMPLES, imported_example


def run_example(name: str, target: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), target],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout.splitlines()


def test_the_sync_client_example_prints_progress_chat_and_a_rejection(
    demo_server: RunningServer,
) -> None:
    lines = run_example("client", demo_server.target)
    assert lines[:4] == ["0", "33", "66", "100"]
    assert lines[4].startswith('You said: "hi".')
    assert lines[5:9] == ["0/250 (0%)", "100/250 (40%)", "200/250 (80%)", "250/250 (100%)"]
    assert lines[9].startswith("rejected: invalid input for 'stream_chat'")
    assert lines[10].startswith("  message: String should have at least 1 character")


def test_the_async_client_example_runs_two_streams_at_once(demo_server: RunningServer) -> None:
    lines = run_example("async_client", demo_server.target)
    assert lines[0].startswith('You said: "hi".')
    assert lines[1].startswith('You said: "one".')
    assert lines[2].startswith('You said: "two".')
    assert lines[3:] == [
        "process_large_file: POST, stream",
        "stream_chat: POST, stream",
        "stream_data: GET, stream",
    ]


@pytest.fixture(scope="module")
def features() -> Iterator[tuple[ModuleType, RunningServer]]:
    with imported_example("features") as module, run_in_thread(module.fns) as running:
        yield module, running


AUTH = {"authorization": "Bearer demo"}


def test_features_middleware_turns_away_calls_without_the_token(
    features: tuple[ModuleType, RunningServer],
) -> None:
    _, server = features
    with Client(server.target) as client, pytest.raises(Unauthenticated, match="Bearer demo"):
        client.call("greet", {"name": "Ada"})


def test_features_every_kind_of_function(features: tuple[ModuleType, RunningServer]) -> None:
    _, server = features
    with Client(server.target, metadata=AUTH) as client:
        assert client.call("greet", {"name": "Ada", "times": 2}) == "Hello, Ada! Hello, Ada!"
        assert list(client.invoke("countdown", 3)) == [3, 2, 1, 0]
        assert client.call("get_order", "o-1") == {"id": "o-1", "total": 9.5}
        with pytest.raises(NotFound, match="no order 'o-2'"):
            client.call("get_order", "o-2")
        stream = client.invoke("ticks")
        ticks = list(stream)
        assert [tick["tick"] for tick in ticks] == [0, 1, 2, 3, 4]
        assert all(tick["remaining"] is None for tick in ticks)
        assert dict(stream.trailing_metadata())["x-ticks"] == "5"


def test_features_ticks_stop_before_the_deadline(
    features: tuple[ModuleType, RunningServer],
) -> None:
    _, server = features
    with Client(server.target, metadata=AUTH) as client:
        stream = client.invoke("ticks", timeout=1.0)
        ticks = list(stream)
    assert len(ticks) >= 2
    assert all(0.2 < tick["remaining"] <= 1.1 for tick in ticks)


def test_resumable_reads_a_reply_in_two_goes() -> None:
    with (
        imported_example("resumable", DEMO_TOKEN_SECONDS="0.01") as module,
        run_in_thread(module.fns) as running,
    ):
        text = module.read_in_two_goes(running.target)
    assert text == "You said 'hi'. Here is a long answer, one word at a time. "


def test_the_observer_example_sees_its_call() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "observer.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "[3, 2, 1]"
    assert lines[1].startswith("1 call(s) seen; slow: countdown OK call ")


def test_the_typed_client_example_calls_by_reference_and_through_generated_code(
    demo_server: RunningServer,
) -> None:
    lines = run_example("typed_client", demo_server.target)
    assert lines[:4] == ["0", "33", "66", "100"]
    assert lines[4].startswith('You said: "hi".')
    assert lines[5] == lines[4]
    assert lines[6:] == ["0 None", "33 None", "66 None", "100 True"]
