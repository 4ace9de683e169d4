"""What the three drivers of old got wrong, over a real connection: each test failed before
one call core served every call (issue "One call path")."""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from grpc_serverfn import Client, DeadlineExceeded, Internal
from grpc_serverfn.observe import CallRecord
from grpc_serverfn.testing import RunningServer, run_in_thread
from tests import app


class Recorder:
    """Keeps every ended call's record."""

    def __init__(self) -> None:
        self.ended: list[CallRecord] = []
        self.started = 0
        self.changed = threading.Condition()

    def call_started(self, record: CallRecord) -> None:
        self.started += 1

    def call_ended(self, record: CallRecord, token: Any) -> None:
        with self.changed:
            self.ended.append(record)
            self.changed.notify_all()

    def mark(self) -> int:
        """Where the calls made from now on start, for ``wait_for``."""
        with self.changed:
            return len(self.ended)

    def wait_for(self, function: str, since: int) -> CallRecord:
        """The first call of ``function`` that ended after ``since``."""

        def found() -> CallRecord | None:
            calls = (record for record in self.ended[since:] if record.function == function)
            return next(calls, None)

        with self.changed:
            assert self.changed.wait_for(lambda: found() is not None, 10)
            record = found()
            assert record is not None
            return record


class Broken:
    """An observer that fails when a call starts."""

    def __init__(self) -> None:
        self.ended = 0

    def call_started(self, record: CallRecord) -> None:
        raise RuntimeError("observer bug: a secret the caller must not see")

    def call_ended(self, record: CallRecord, token: Any) -> None:
        self.ended += 1


@pytest.fixture(scope="module")
def observed() -> Iterator[tuple[RunningServer, Recorder, Recorder, Broken]]:
    before, after, broken = Recorder(), Recorder(), Broken()
    with run_in_thread(app.fns, observers=[before, broken, after]) as running:
        yield running, before, after, broken


def key() -> str:
    return f"path-{uuid.uuid4()}"


@pytest.mark.parametrize("coalesce", [False, True])
@pytest.mark.parametrize("function", ["commit_or_rollback", "commit_or_rollback_once"])
def test_ctx_cancelled_is_true_in_the_handlers_finally_after_a_cancel(
    server: RunningServer, function: str, coalesce: bool
) -> None:
    probe_key = key()
    probe = app.probe(probe_key)
    with Client(server.target, coalesce=coalesce) as client:
        stream = client.invoke(function, {"probe": probe_key, "chunks": 1})
        if function == "commit_or_rollback":
            assert next(iter(stream)) == 0
        assert probe.waiting.wait(5)
        stream.cancel()
    assert probe.cleaned_up.wait(5)
    assert probe.cancelled_in_finally is True


@pytest.mark.parametrize("function", ["commit_or_rollback", "commit_or_rollback_once"])
def test_ctx_cancelled_is_true_in_the_handlers_finally_after_the_deadline(
    server: RunningServer, function: str
) -> None:
    probe_key = key()
    probe = app.probe(probe_key)
    with Client(server.target) as client, pytest.raises(DeadlineExceeded):
        list(client.invoke(function, {"probe": probe_key}, timeout=0.3))
    assert probe.cleaned_up.wait(5)
    assert probe.cancelled_in_finally is True


def test_ctx_cancelled_stays_false_for_a_call_that_finished(server: RunningServer) -> None:
    probe_key = key()
    with Client(server.target) as client:
        assert client.call("commit_or_rollback_once", {"probe": probe_key, "seconds": 0}) == (
            "committed"
        )
    assert app.probe(probe_key).cancelled_in_finally is False


def test_a_resumable_calls_deadline_is_recorded_as_deadline_exceeded(
    observed: tuple[RunningServer, Recorder, Recorder, Broken],
) -> None:
    server, _, after, _ = observed
    since = after.mark()
    with Client(server.target) as client, pytest.raises(DeadlineExceeded):
        list(client.invoke("resumable_ticks", {"count": 1000, "seconds": 0.01}, timeout=0.3))
    assert after.wait_for("resumable_ticks", since).code is grpc.StatusCode.DEADLINE_EXCEEDED


def test_an_unexpected_error_in_a_resumable_stream_names_the_call_id(
    observed: tuple[RunningServer, Recorder, Recorder, Broken], caplog: pytest.LogCaptureFixture
) -> None:
    server, _, after, _ = observed
    since = after.mark()
    with (
        caplog.at_level(logging.ERROR, logger="grpc_serverfn.server"),
        Client(server.target) as client,
        pytest.raises(Internal) as raised,
    ):
        list(client.invoke("resumable_ticks", {"count": 5, "seconds": 0, "crash_at": 2}))
    assert "secret" not in raised.value.message
    named = re.search(r"\(call (\S+)\)", raised.value.message)
    assert named is not None
    record = after.wait_for("resumable_ticks", since)
    assert named.group(1) == record.call_id
    # The log line with the traceback names the same call, so an operator can join them.
    assert any(record.call_id in r.getMessage() and r.exc_info for r in caplog.records)


def test_an_observer_failing_at_the_start_neither_fails_the_call_nor_skips_the_others(
    observed: tuple[RunningServer, Recorder, Recorder, Broken], caplog: pytest.LogCaptureFixture
) -> None:
    server, before, after, broken = observed
    since = before.mark(), after.mark()
    with caplog.at_level(logging.ERROR), Client(server.target) as client:
        assert list(client.invoke("count_async", {"n": 3})) == [0, 1, 2]
    # Both working observers saw the call start and end; the broken one is not told the end
    # of a call it never started, and its failure is in the log with the call's id.
    assert before.wait_for("count_async", since[0]).code is grpc.StatusCode.OK
    assert after.wait_for("count_async", since[1]).code is grpc.StatusCode.OK
    assert broken.ended == 0
    call_id = after.wait_for("count_async", since[1]).call_id
    assert any(
        "failed at the start of call" in r.getMessage() and call_id in r.getMessage()
        for r in caplog.records
    )
