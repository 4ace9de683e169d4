"""The observer hook: every Invoke is shown to observers at its start and end, labelled by
server function, with its status, chunks, messages and timing, whatever way it ended."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from grpc_serverfn import Client, Internal, NotFound
from grpc_serverfn.observe import UNKNOWN_FUNCTION, CallRecord
from grpc_serverfn.testing import RunningServer, run_in_thread
from tests import app


class Recorder:
    """Keeps what it is shown; call_started's token must come back to call_ended."""

    def __init__(self) -> None:
        self.ended: list[tuple[CallRecord, Any]] = []
        self.started = 0
        self.changed = threading.Condition()

    def call_started(self, record: CallRecord) -> Any:
        self.started += 1
        return ("token", record.call_id)

    def call_ended(self, record: CallRecord, token: Any) -> None:
        assert record.peer  # read while the call's context is alive; kept for later
        with self.changed:
            self.ended.append((record, token))
            self.changed.notify_all()

    def wait_for(self, count: int) -> list[CallRecord]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.ended) >= count, 10)
            for record, token in self.ended:
                assert token == ("token", record.call_id)
            return [record for record, _ in self.ended]


@pytest.fixture
def observed() -> Iterator[tuple[RunningServer, Recorder]]:
    recorder = Recorder()
    with run_in_thread(app.fns, observers=[recorder]) as running:
        yield running, recorder


@pytest.mark.parametrize("coalesce", [False, True])
def test_a_call_is_recorded_with_its_function_chunks_and_timing(
    observed: tuple[RunningServer, Recorder], coalesce: bool
) -> None:
    server, recorder = observed
    with Client(server.target, coalesce=coalesce) as client:
        assert list(client.invoke("count_async", {"n": 5})) == [0, 1, 2, 3, 4]
    [record] = recorder.wait_for(1)
    assert record.function == "count_async"
    assert record.code is grpc.StatusCode.OK
    assert record.sent.chunks == 5
    assert 1 <= record.sent.messages <= 5
    assert not coalesce or record.sent.messages <= 5
    assert record.time_to_first_chunk is not None
    assert 0 <= record.time_to_first_chunk <= record.duration < 10
    assert record.input == {"n": 5}
    assert record.peer.startswith("ipv4:127.0.0.1:")


def test_errors_unknown_functions_and_cancels_are_recorded(
    observed: tuple[RunningServer, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    server, recorder = observed
    with Client(server.target) as client:
        with pytest.raises(NotFound):
            client.call("no_such_function")
        with (
            caplog.at_level(logging.ERROR, logger="grpc_serverfn.server"),
            pytest.raises(Internal) as crashed,
        ):
            list(client.invoke("crash_after", {"n": 2}))
        stream = client.invoke("endless", {"probe": "observed-endless"})
        next(stream)
        stream.cancel()
    records = recorder.wait_for(3)  # the cancelled call ends a moment after cancel()
    by_function = {record.function: record for record in records}
    assert by_function[UNKNOWN_FUNCTION].code is grpc.StatusCode.NOT_FOUND
    crash = by_function["crash_after"]
    assert (crash.code, crash.sent.chunks) == (grpc.StatusCode.INTERNAL, 2)
    # The caller's message names the call; the log line with the traceback names it too.
    call_id = re.search(r"\(call (\S+)\)", crashed.value.message)
    assert call_id is not None
    assert call_id.group(1) == crash.call_id
    assert any(crash.call_id in r.getMessage() and r.exc_info for r in caplog.records)
    endless = by_function["endless"]
    assert endless.code is grpc.StatusCode.CANCELLED
    assert endless.cancelled
    assert recorder.started == 3


def test_a_resume_without_a_function_name_is_labelled_by_its_stream(
    observed: tuple[RunningServer, Recorder],
) -> None:
    server, recorder = observed
    with Client(server.target) as client:
        stream = client.invoke("resumable_ticks", {"count": 3, "seconds": 0})
        assert [chunk["tick"] for chunk in stream] == [0, 1, 2]
        stream_id = stream.stream_id()
        assert stream_id is not None
        assert [chunk["tick"] for chunk in client.resume(stream_id, 1)] == [1, 2]  # no name
        with pytest.raises(NotFound):
            list(client.resume("0" * 32))
    first, resumed, unknown = recorder.wait_for(3)
    assert (first.function, first.resumed, first.sent.chunks) == ("resumable_ticks", False, 3)
    assert (resumed.function, resumed.resumed, resumed.sent.chunks) == ("resumable_ticks", True, 2)
    assert (unknown.function, unknown.code) == (UNKNOWN_FUNCTION, grpc.StatusCode.NOT_FOUND)
