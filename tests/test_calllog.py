"""The call log: one line per call at its end on ``grpc_serverfn.calls``, its fields also on
the record for JSON formatters, payloads only when asked; and ``serve --log-format json``."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import time

import pytest

from grpc_serverfn import Client, FailedPrecondition, Internal, NotFound
from grpc_serverfn.calllog import LOGGER_NAME, CallLog
from grpc_serverfn.observe import UNKNOWN_FUNCTION
from grpc_serverfn.testing import run_in_loop, run_in_thread
from tests import app
from tests.processes import PROMPTLY, ServerProcess, serving
from tests.test_web import client_for, collect, request

FIELDS = {
    "serverfn_function",
    "serverfn_code",
    "serverfn_chunks",
    "serverfn_messages",
    "serverfn_duration_ms",
    "serverfn_first_chunk_ms",
    "serverfn_peer",
    "serverfn_call_id",
    "serverfn_protocol",
    "serverfn_resumed",
}


@pytest.fixture
def calls(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    return caplog


def call_lines(caplog: pytest.LogCaptureFixture, count: int) -> list[logging.LogRecord]:
    """The call log's records, once there are ``count`` (a cancelled call ends a moment after
    the client has let go)."""
    deadline = time.monotonic() + PROMPTLY
    while True:
        lines = [record for record in caplog.records if record.name == LOGGER_NAME]
        if len(lines) >= count or time.monotonic() > deadline:
            assert len(lines) == count, [line.getMessage() for line in lines]
            return lines
        time.sleep(0.01)


def test_an_ok_call_logs_one_line_with_its_fields(calls: pytest.LogCaptureFixture) -> None:
    with run_in_thread(app.fns, observers=[CallLog()]) as server, server.client() as client:
        assert list(client.invoke("count_async", {"n": 3, "probe": "secret-input"})) == [0, 1, 2]
        [line] = call_lines(calls, 1)
    assert line.levelno == logging.INFO
    assert vars(line).keys() >= FIELDS
    assert line.serverfn_function == "count_async"
    assert line.serverfn_code == "OK"
    assert line.serverfn_chunks == 3
    assert line.serverfn_resumed is False
    assert line.serverfn_protocol == "grpc"
    assert 0 <= line.serverfn_first_chunk_ms <= line.serverfn_duration_ms < PROMPTLY * 1000
    assert line.serverfn_peer.startswith("ipv4:127.0.0.1:")
    assert re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", line.serverfn_call_id)
    message = line.getMessage()
    assert message.startswith("count_async OK chunks=3 duration_ms=")
    assert message.endswith(f"peer={line.serverfn_peer} call_id={line.serverfn_call_id}")
    assert "protocol=" not in message  # gRPC's, left out of the text
    # No payload unless asked for.
    assert "secret-input" not in message
    assert not hasattr(line, "serverfn_input")
    assert all("secret-input" not in repr(vars(record)) for record in calls.records)


async def test_web_calls_log_their_protocol(calls: pytest.LogCaptureFixture) -> None:
    """The web port's calls log as the gRPC port's do, naming their protocol."""
    async with run_in_loop(app.fns, web_port=0, observers=[CallLog(delay=0)]) as running:
        for wire in ("connect-json", "grpc-web-proto"):
            async with client_for(running.web_url, wire) as client:
                chunks, error = await collect(client, request("count_async", {"n": 2}))
                assert (len(chunks), error) == (2, None)
                _, error = await collect(client, request("fail_after", {"n": 1}))
                assert error is not None
        lines = await asyncio.to_thread(call_lines, calls, 4)
    seen = [(line.serverfn_protocol, line.serverfn_function, line.serverfn_code) for line in lines]
    assert seen == [
        ("connect", "count_async", "OK"),
        ("connect", "fail_after", "FAILED_PRECONDITION"),
        ("grpc-web", "count_async", "OK"),
        ("grpc-web", "fail_after", "FAILED_PRECONDITION"),
    ]
    for line in lines:
        message = line.getMessage()
        assert f"call_id={line.serverfn_call_id} protocol={line.serverfn_protocol}" in message
        assert line.serverfn_peer.startswith("ipv4:127.0.0.1:")
    assert lines[1].serverfn_error == "the widget is not ready"


def test_errors_unknown_functions_and_cancels_log_their_status(
    calls: pytest.LogCaptureFixture,
) -> None:
    with run_in_thread(app.fns, observers=[CallLog()]) as server, server.client() as client:
        with pytest.raises(NotFound):
            client.call("no_such_function")
        with pytest.raises(FailedPrecondition):
            list(client.invoke("fail_after", {"n": 1}))
        stream = client.invoke("endless", {"probe": "calllog-endless"})
        next(stream)
        stream.cancel()
        lines = call_lines(calls, 3)
    by_function = {line.serverfn_function: line for line in lines}
    unknown = by_function[UNKNOWN_FUNCTION]
    assert (unknown.serverfn_code, unknown.levelno) == ("NOT_FOUND", logging.INFO)
    assert "no_such_function" in unknown.serverfn_error  # the client's message, echoed
    failed = by_function["fail_after"]
    assert (failed.serverfn_code, failed.levelno) == ("FAILED_PRECONDITION", logging.INFO)
    assert failed.serverfn_chunks == 1
    assert failed.serverfn_error == "the widget is not ready"
    assert 'error="the widget is not ready"' in failed.getMessage()
    endless = by_function["endless"]
    assert (endless.serverfn_code, endless.levelno) == ("CANCELLED", logging.INFO)
    assert endless.serverfn_chunks >= 1
    assert f"endless CANCELLED chunks={endless.serverfn_chunks}" in endless.getMessage()


def test_a_crash_logs_its_traceback_and_a_warning_both_naming_the_call_the_client_names(
    calls: pytest.LogCaptureFixture,
) -> None:
    with (
        run_in_thread(app.fns, observers=[CallLog()]) as server,
        server.client() as client,
        pytest.raises(Internal) as crashed,
    ):
        list(client.invoke("crash_after", {"n": 2}))
    [line] = call_lines(calls, 1)
    assert (line.serverfn_code, line.levelno) == ("INTERNAL", logging.WARNING)
    assert line.serverfn_chunks == 2
    named = re.search(r"\(call (\S+)\)", crashed.value.message)
    assert named is not None
    assert named.group(1) == line.serverfn_call_id
    [traceback] = [record for record in calls.records if record.exc_info]
    assert line.serverfn_call_id in traceback.getMessage()
    assert traceback.levelno == logging.ERROR
    assert "hunter2" not in crashed.value.message  # the traceback's secret stays in the log


def test_payloads_are_logged_cut_short_only_when_asked(calls: pytest.LogCaptureFixture) -> None:
    log = CallLog(log_payloads=True, max_payload_chars=40)
    with run_in_thread(app.fns, observers=[log]) as server, server.client() as client:
        assert client.call("echo_async", {"word": "hello"}) == {"word": "hello"}
        long = "x" * 1000
        assert client.call("echo_async", long) == long
        assert client.call("no_input") is not None
        short, cut, empty = call_lines(calls, 3)
    assert short.serverfn_input == '{"word":"hello"}'
    assert short.getMessage().endswith(' input={"word":"hello"}')
    assert cut.serverfn_input == '"' + "x" * 39 + "... (cut from 1002 characters)"
    assert "x" * 41 not in cut.getMessage()
    assert empty.serverfn_input is None


def test_at_warning_only_the_calls_that_failed_on_the_server_are_logged(
    calls: pytest.LogCaptureFixture,
) -> None:
    calls.set_level(logging.WARNING, logger=LOGGER_NAME)
    with run_in_thread(app.fns, observers=[CallLog()]) as server, server.client() as client:
        assert client.call("echo_async", 1) == 1
        with pytest.raises(Internal):
            client.call("crash_sync")
        [line] = call_lines(calls, 1)  # the failed call still shows at WARNING
    assert line.serverfn_function == "crash_sync"


def stopped(server: ServerProcess) -> list[str]:
    server.signal(signal.SIGTERM)
    assert server.wait(PROMPTLY) == 0, server.log
    return server.lines


def test_serve_json_writes_every_line_as_json_with_the_call_fields() -> None:
    with serving(
        "tests.app:fns", "--port", "0", "--log-format", "json", "--log-payloads"
    ) as server:
        with Client(server.wait_serving(), timeout=PROMPTLY) as client:
            assert list(client.invoke("count_async", {"n": 2})) == [0, 1]
            with pytest.raises(Internal) as crashed:
                list(client.invoke("crash_after", {"n": 1}))
        server.wait_for_line(r'"serverfn_function":"crash_after"')
        lines = [json.loads(line) for line in stopped(server)]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    by_function = {line.get("serverfn_function"): line for line in lines}
    ok = by_function["count_async"]
    assert (ok["level"], ok["logger"], ok["serverfn_code"]) == ("INFO", LOGGER_NAME, "OK")
    assert ok["serverfn_chunks"] == 2
    assert ok["serverfn_input"] == '{"n":2}'
    assert ok.keys() >= FIELDS
    crash = by_function["crash_after"]
    assert (crash["level"], crash["serverfn_code"]) == ("WARNING", "INTERNAL")
    assert f"(call {crash['serverfn_call_id']})" in crashed.value.message
    [traceback] = [line for line in lines if "exception" in line]
    assert traceback["level"] == "ERROR"
    assert crash["serverfn_call_id"] in traceback["message"]
    assert "SecretError: password=hunter2" in traceback["exception"]
    assert any("grpc-serverfn serving" in line["message"] for line in lines)


def test_serve_logs_calls_as_text_by_default_and_not_with_no_call_log() -> None:
    for extra, logged in [((), True), (("--no-call-log",), False)]:
        with serving("tests.app:fns", "--port", "0", *extra) as server:
            with Client(server.wait_serving(), timeout=PROMPTLY) as client:
                assert client.call("echo_async", {"secret": "s3cret"}) == {"secret": "s3cret"}
            lines = stopped(server)
        call = [line for line in lines if f" INFO {LOGGER_NAME}: echo_async OK " in line]
        assert len(call) == (1 if logged else 0), lines
        assert "s3cret" not in "".join(lines)


def test_log_payloads_without_the_call_log_is_a_usage_error() -> None:
    with serving("tests.app:fns", "--no-call-log", "--log-payloads") as server:
        assert server.wait(PROMPTLY) == 2
        assert "--log-payloads needs the call log" in server.log


def test_lines_wait_for_their_batch_keep_their_time_and_are_all_written_at_stop(
    calls: pytest.LogCaptureFixture,
) -> None:
    # A minute's delay: nothing but the server's stop can write these lines.
    with run_in_thread(app.fns, observers=[CallLog(delay=60)]) as server:
        before = time.time()
        with server.client() as client:
            for n in (1, 2, 3):
                assert list(client.invoke("count_async", {"n": n})) == list(range(n))
        after = time.time()
        time.sleep(0.3)
        assert [r for r in calls.records if r.name == LOGGER_NAME] == []
    lines = call_lines(calls, 3)
    assert [line.serverfn_chunks for line in lines] == [1, 2, 3]  # type: ignore[attr-defined]
    for line in lines:
        # The time the call ended, not the time the batch was written.
        assert before <= line.created <= after
        assert line.msecs == int((line.created - int(line.created)) * 1000)


def test_a_full_batch_is_written_without_waiting_for_its_delay(
    calls: pytest.LogCaptureFixture,
) -> None:
    with run_in_thread(app.fns, observers=[CallLog(delay=60)]) as server:
        with server.client() as client:
            for _ in range(64):
                assert list(client.invoke("count_async", {"n": 1})) == [0]
            assert len(call_lines(calls, 64)) == 64  # before the server stops
            assert list(client.invoke("count_async", {"n": 1})) == [0]
        time.sleep(0.3)
        assert len([r for r in calls.records if r.name == LOGGER_NAME]) == 64
    assert len(call_lines(calls, 65)) == 65


def test_with_no_delay_each_line_is_written_as_its_call_ends(
    calls: pytest.LogCaptureFixture,
) -> None:
    with run_in_thread(app.fns, observers=[CallLog(delay=0)]) as server, server.client() as client:
        for n in (1, 2):
            assert list(client.invoke("count_async", {"n": n})) == list(range(n))
            # Written before the server ended the call, so before the caller saw its end.
            assert len([r for r in calls.records if r.name == LOGGER_NAME]) == n
