"""The call core on an in-memory transport: real calls, every way they end, no socket.

These drive ``CallCore`` through ``tests/memory_transport.py``, a second implementation of
the core's ``Transport`` protocol, so they prove that the core needs nothing from grpc.aio.
The same behaviours are tested over real connections elsewhere (tests/test_one_call_path.py
for the ones this redesign fixed).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

import grpc_serverfn._call
from grpc_serverfn import Context, Limits, Registry
from grpc_serverfn._call import CallCore
from grpc_serverfn._transport import ResumePoint
from grpc_serverfn._wire import GRPC_DETAILS_METADATA_KEY, STREAM_ID_METADATA_KEY
from grpc_serverfn.observe import CallRecord
from tests import app
from tests.memory_transport import call, start


class Records:
    """An observer keeping every ended call's record."""

    def __init__(self) -> None:
        self.ended: list[CallRecord] = []

    def call_started(self, record: CallRecord) -> None:
        return None

    def call_ended(self, record: CallRecord, token: Any) -> None:
        self.ended.append(record)


@pytest.fixture
def records() -> Records:
    return Records()


@pytest.fixture
def core(records: Records) -> CallCore:
    return CallCore(app.fns, observers=[records])


def key() -> str:
    return f"core-{uuid.uuid4()}"


async def until(event: threading.Event) -> None:
    """Wait for a handler's probe (set from any thread) without blocking the loop."""
    await asyncio.to_thread(event.wait, 10)
    assert event.is_set()


async def test_chunks_arrive_in_order_then_ok(core: CallCore, records: Records) -> None:
    done = await call(core, "count_async", {"n": 4})
    assert done.chunks == [0, 1, 2, 3]
    assert done.seqs == [0, 1, 2, 3]
    assert done.code is grpc.StatusCode.OK
    [record] = records.ended
    assert (record.function, record.code, record.sent.chunks) == ("count_async", done.code, 4)
    assert record.protocol == "memory"


async def test_coalesced_chunks_arrive_in_batches_in_order(core: CallCore) -> None:
    done = await call(core, "count_async", {"n": 500}, max_batch=64)
    assert done.chunks == list(range(500))
    assert len(done.messages) < 500
    assert done.code is grpc.StatusCode.OK


@pytest.mark.parametrize("max_batch", [1, 64])
async def test_an_error_after_chunks_comes_after_them_with_its_details(
    core: CallCore, max_batch: int
) -> None:
    done = await call(core, "fail_after", {"n": 3}, max_batch=max_batch)
    assert done.chunks == [0, 1, 2]
    assert done.code is grpc.StatusCode.FAILED_PRECONDITION
    details = done.trailer(GRPC_DETAILS_METADATA_KEY)
    assert isinstance(details, bytes)
    assert (
        status_pb2.Status.FromString(details).code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    )


async def test_an_unexpected_error_is_internal_naming_the_call(
    core: CallCore, records: Records, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="grpc_serverfn.server"):
        done = await call(core, "crash_after", {"n": 2})
    assert done.chunks == [0, 1]
    assert done.code is grpc.StatusCode.INTERNAL
    assert done.ending is not None
    assert f"(call {records.ended[0].call_id})" in done.ending.message
    assert "boom" not in done.ending.message.lower()


async def test_an_unknown_function_is_not_found(core: CallCore, records: Records) -> None:
    done = await call(core, "no_such_function")
    assert done.code is grpc.StatusCode.NOT_FOUND
    assert records.ended[0].function == "(unknown)"


@pytest.mark.parametrize("max_batch", [1, 64])
@pytest.mark.parametrize("function", ["commit_or_rollback", "commit_or_rollback_once"])
async def test_a_cancelled_call_ends_cancelled_and_its_cleanup_sees_it(
    core: CallCore, records: Records, function: str, max_batch: int
) -> None:
    probe_key = key()
    running = start(core, function, {"probe": probe_key}, max_batch=max_batch)
    probe = app.probe(probe_key)
    await until(probe.waiting)
    running.cancel()
    done = await running.done()
    assert probe.cleaned_up.is_set()
    assert probe.cancelled_in_finally is True
    assert done.ending is None  # nothing is sent to a caller that is gone
    assert records.ended[0].code is grpc.StatusCode.CANCELLED


@pytest.mark.parametrize("function", ["commit_or_rollback", "commit_or_rollback_once"])
async def test_a_deadline_ends_the_call_and_its_cleanup_sees_it(
    core: CallCore, records: Records, function: str
) -> None:
    probe_key = key()
    done = await call(core, function, {"probe": probe_key}, timeout=0.2)
    probe = app.probe(probe_key)
    assert probe.cleaned_up.is_set()
    assert probe.cancelled_in_finally is True
    assert records.ended[0].code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert done.ending is None


async def test_a_finished_call_did_not_see_a_cancel(core: CallCore) -> None:
    probe_key = key()
    done = await call(core, "commit_or_rollback", {"probe": probe_key, "seconds": 0})
    assert done.code is grpc.StatusCode.OK
    assert app.probe(probe_key).cancelled_in_finally is False


async def test_a_resumable_stream_announces_its_id_and_resumes_where_asked(
    core: CallCore,
) -> None:
    first = await call(core, "resumable_ticks", {"count": 4, "seconds": 0})
    assert [chunk["tick"] for chunk in first.chunks] == [0, 1, 2, 3]
    [(name, stream_id)] = first.headers
    assert name == STREAM_ID_METADATA_KEY
    again = await call(core, "", resume=ResumePoint(stream_id, 2))
    assert [chunk["tick"] for chunk in again.chunks] == [2, 3]
    assert again.seqs == [2, 3]
    assert again.code is grpc.StatusCode.OK


async def test_a_resumable_calls_deadline_is_recorded_as_a_deadline(
    core: CallCore, records: Records
) -> None:
    await call(core, "resumable_ticks", {"count": 1000, "seconds": 0.01}, timeout=0.2)
    assert records.ended[0].code is grpc.StatusCode.DEADLINE_EXCEEDED


async def test_limits_refuse_a_call_over_the_concurrency_limit() -> None:
    core = CallCore(app.fns, limits=Limits(max_concurrent_calls=1))
    probe_key = key()
    first = start(core, "commit_or_rollback", {"probe": probe_key})
    await until(app.probe(probe_key).waiting)
    second = await call(core, "count_async", {"n": 1})
    assert second.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    first.cancel()
    await first.done()
    assert (await call(core, "count_async", {"n": 1})).chunks == [0]


def refusal_details(transport: Any) -> list[Any]:
    """The ErrorInfo and RetryInfo of a refused call's ``google.rpc.Status`` trailer."""
    status = status_pb2.Status.FromString(transport.trailer(GRPC_DETAILS_METADATA_KEY))
    found: list[Any] = []
    for packed in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo):
            detail = kind()
            if packed.Unpack(detail):
                found.append(detail)
    return found


async def test_a_call_refused_at_capacity_says_so_is_recorded_and_logged_once_a_while(
    records: Records, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(grpc_serverfn._call, "REFUSAL_LOG_SECONDS", 0.2)
    core = CallCore(app.fns, limits=Limits(max_concurrent_calls=1), observers=[records])
    probe_key = key()
    first = start(core, "commit_or_rollback", {"probe": probe_key})
    await until(app.probe(probe_key).waiting)
    with caplog.at_level(logging.INFO, logger="grpc_serverfn.server"):
        refused = [await call(core, "count_async", {"n": 1}) for _ in range(20)]
        first_lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        await asyncio.sleep(0.3)
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    first.cancel()
    await first.done()

    assert {transport.code for transport in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    info, retry = refusal_details(refused[0])
    assert (info.domain, info.reason) == ("serverfn.v1", "SERVER_AT_CAPACITY")
    assert dict(info.metadata) == {"max_concurrent_calls": "1"}
    assert retry.retry_delay.ToTimedelta().total_seconds() == 0.1
    assert [r.refused for r in records.ended[:20]] == ["SERVER_AT_CAPACITY"] * 20
    assert records.ended[20].refused is None  # the call it served
    assert first_lines == [
        "refused a call: the server is serving its limit of 1 concurrent calls"
        " (RESOURCE_EXHAUSTED; Limits.max_concurrent_calls, serve --max-concurrent-calls)"
    ]
    assert lines[1].startswith("refused 19 more call(s) within 0.2 s: the server is serving")
    assert len(lines) == 2
    assert caplog.records[0].levelno == logging.WARNING


async def test_a_call_refused_while_shutting_down_says_so(records: Records) -> None:
    core = CallCore(app.fns, observers=[records])
    core.start_draining()
    refused = await call(core, "count_async", {"n": 1})
    core.flush_log()
    assert refused.code is grpc.StatusCode.UNAVAILABLE
    [info] = refusal_details(refused)
    assert (info.domain, info.reason) == ("serverfn.v1", "SERVER_SHUTTING_DOWN")
    assert records.ended[0].refused == "SERVER_SHUTTING_DOWN"


async def test_calls_refused_for_other_reasons_are_not_counted_as_refused(
    core: CallCore, records: Records
) -> None:
    assert (await call(core, "no_such_function")).code is grpc.StatusCode.NOT_FOUND
    assert (await call(core, "fail_with", "x")).code is grpc.StatusCode.FAILED_PRECONDITION
    assert [record.refused for record in records.ended] == [None, None]


async def test_middleware_runs_around_a_call_on_any_transport() -> None:
    fns = Registry()
    seen: list[str] = []

    @fns.middleware
    async def note(call_: Any, call_next: Any) -> AsyncIterator[Any]:
        seen.append(call_.ctx.metadata.get("x-who", "?"))
        async for chunk in call_next(call_):
            yield chunk * 10

    @fns.server_fn
    async def numbers(ctx: Context) -> AsyncIterator[int]:
        yield 1
        yield 2

    done = await call(CallCore(fns), "numbers", metadata=[("x-who", "memory")])
    assert done.chunks == [10, 20]
    assert seen == ["memory"]


async def test_the_core_imports_no_grpc_aio() -> None:
    import grpc_serverfn._call as core_module

    source = Path(core_module.__file__).read_text()  # noqa: ASYNC240 - a test reads its subject
    assert not re.search(r"^\s*(import|from)\s+grpc\.aio", source, re.MULTILINE)
    assert "ServicerContext" not in source
    assert "InvokeRequest" not in source
