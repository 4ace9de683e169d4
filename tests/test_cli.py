"""The ``grpc-serverfn`` console script: ``serve``, ``call`` and ``list`` as a user runs them."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from grpc_serverfn import Client
from grpc_serverfn.testing import RunningServer
from tests.conftest import imported_example
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

DEMO_SPEC = "examples/demo.py:fns"

STREAM_DATA = [{"progress": 0}, {"progress": 33}, {"progress": 66}, {"progress": 100, "done": True}]


def _demo_local_reply(message: str) -> str:
    with imported_example("demo") as demo:
        reply: str = demo.local_reply(message)
    return reply


@pytest.fixture(scope="module")
def demo_server() -> Iterator[ServerProcess]:
    """The demo app served by the console script on a free port, for the whole module."""
    with serving(DEMO_SPEC, "--port", "0") as server:
        server.wait_serving()
        yield server
        server.signal(signal.SIGTERM)
        assert server.wait(5) == 0, server.log
        assert "grpc-serverfn stopped" in server.log


@pytest.fixture(scope="module")
def target(demo_server: ServerProcess) -> str:
    return demo_server.address


run = run_cli


def json_lines(stdout: str) -> list[Any]:
    """Every stdout line parsed as JSON (each must be exactly one JSON document)."""
    return [json.loads(line) for line in stdout.splitlines()]


def csv_input(rows: int) -> str:
    text = "id,name\n" + "".join(f"{i},name-{i}\n" for i in range(rows))
    return json.dumps({"file": text})


def process_file_output(rows: int) -> list[dict[str, Any]]:
    chunks: list[dict[str, Any]] = [
        {"processed": i, "total": rows, "percent": round(i * 100 / rows)}
        for i in range(0, rows, 100)
    ]
    chunks.append({"processed": rows, "total": rows, "percent": 100, "complete": True})
    return chunks


# -- call ------------------------------------------------------------------------------------


def test_call_stream_data_prints_one_json_line_per_chunk(target: str) -> None:
    result = run("call", target, "stream_data")
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout) == STREAM_DATA
    assert result.stderr == ""


def test_call_stream_chat_with_json_argument(target: str) -> None:
    result = run("call", target, "stream_chat", '{"message":"hi"}')
    assert result.returncode == 0, result.stderr
    chunks = json_lines(result.stdout)
    assert len(chunks) > 3
    assert all(set(chunk) == {"text"} for chunk in chunks)
    assert "".join(chunk["text"] for chunk in chunks) == _demo_local_reply("hi")


def test_call_reads_input_from_stdin(target: str) -> None:
    result = run("call", target, "stream_chat", "-", input='{"message": "from stdin"}')
    assert result.returncode == 0, result.stderr
    text = "".join(chunk["text"] for chunk in json_lines(result.stdout))
    assert text == _demo_local_reply("from stdin")


def test_call_reads_input_from_a_file(target: str, tmp_path: Path) -> None:
    path = tmp_path / "input.json"
    path.write_text('{"message": "from a file"}')
    result = run("call", target, "stream_chat", f"@{path}")
    assert result.returncode == 0, result.stderr
    text = "".join(chunk["text"] for chunk in json_lines(result.stdout))
    assert text == _demo_local_reply("from a file")


def test_call_with_a_missing_input_file_is_a_usage_error(target: str, tmp_path: Path) -> None:
    result = run("call", target, "stream_chat", f"@{tmp_path / 'absent.json'}")
    assert result.returncode == 2
    assert "cannot read" in result.stderr
    assert "absent.json" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("function", "data"),
    [("stream_data", None), ("process_large_file", csv_input(250))],
)
def test_call_value_encoding_prints_the_same_lines(
    target: str, function: str, data: str | None
) -> None:
    extra = [data] if data is not None else []
    as_json = run("call", target, function, *extra)
    as_value = run("call", target, function, *extra, "--encoding", "value")
    assert as_json.returncode == 0, as_json.stderr
    assert as_value.returncode == 0, as_value.stderr
    # The same chunks (a Value struct is a map: its keys may come out in another order).
    assert json_lines(as_value.stdout) == json_lines(as_json.stdout)
    assert len(as_value.stdout.splitlines()) == len(as_json.stdout.splitlines())
    assert json_lines(as_value.stdout)[-1]["complete" if data else "done"] is True


def test_call_with_invalid_input_exits_64_plus_invalid_argument(target: str) -> None:
    result = run("call", target, "stream_chat", '{"message": ""}')
    assert result.returncode == 64 + 3
    assert result.stdout == ""
    assert "INVALID_ARGUMENT" in result.stderr
    assert re.search(r"^\s+message: ", result.stderr, re.MULTILINE), result.stderr
    assert "Traceback" not in result.stderr


def test_call_bad_csv_names_the_line(target: str) -> None:
    data = json.dumps({"file": "id,name\n1,a\n2,b\n3,c,extra\n"})
    result = run("call", target, "process_large_file", data)
    assert result.returncode == 64 + 3
    assert "INVALID_ARGUMENT" in result.stderr
    assert "line 4" in result.stderr
    assert re.search(r"^\s+file: line 4", result.stderr, re.MULTILINE), result.stderr


def test_call_unknown_function_exits_64_plus_not_found(target: str) -> None:
    result = run("call", target, "no_such_function")
    assert result.returncode == 64 + 5
    assert result.stdout == ""
    assert "NOT_FOUND" in result.stderr
    assert "no_such_function" in result.stderr


def test_call_with_malformed_json_is_a_usage_error(target: str) -> None:
    result = run("call", target, "stream_chat", '{"message": ')
    assert result.returncode == 2
    assert result.stdout == ""
    assert "not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr


def test_call_with_a_header_still_works(target: str) -> None:
    result = run("call", target, "stream_data", "-H", "x-token: abc")
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout) == STREAM_DATA


def test_call_with_a_malformed_header_is_a_usage_error(target: str) -> None:
    result = run("call", target, "stream_data", "-H", "no-colon-here")
    assert result.returncode == 2
    assert "KEY: VALUE" in result.stderr
    assert result.stdout == ""


# -- progress bar ----------------------------------------------------------------------------


def test_progress_flag_draws_a_bar_on_stderr_only(target: str) -> None:
    result = run("call", target, "process_large_file", csv_input(300), "--progress")
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout) == process_file_output(300)
    assert "%|" not in result.stdout
    assert "%|" in result.stderr
    assert "100%" in result.stderr
    assert "300/300" in result.stderr


def test_no_bar_by_default_when_stdout_is_not_a_terminal(target: str) -> None:
    result = run("call", target, "process_large_file", csv_input(300))
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout) == process_file_output(300)
    assert result.stderr == ""


def run_on_terminal(*args: str) -> tuple[int, str, str]:
    """Run the console script with stdout on a pseudo-terminal; (exit code, stdout, stderr)."""
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(
            [SCRIPT, *args],
            cwd=ROOT,
            env=server_env(),
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.close(slave)
        slave = -1
        output = bytearray()
        reader = threading.Thread(target=_drain, args=(master, output), daemon=True)
        reader.start()
        try:
            _, stderr = process.communicate(timeout=PROMPTLY)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(PROMPTLY)
        reader.join(PROMPTLY)
    finally:
        if slave != -1:
            os.close(slave)
        os.close(master)
    stdout = output.decode().replace("\r\n", "\n")
    return process.returncode, stdout, stderr


def _drain(fd: int, into: bytearray) -> None:
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO once the child has closed the terminal
            return
        if not data:
            return
        into.extend(data)


def test_bar_appears_by_default_when_stdout_is_a_terminal(target: str) -> None:
    code, stdout, stderr = run_on_terminal("call", target, "process_large_file", csv_input(300))
    assert code == 0, stderr
    assert json_lines(stdout) == process_file_output(300)
    assert "%|" in stderr
    assert "100%" in stderr


def test_no_progress_flag_hides_the_bar_even_on_a_terminal(target: str) -> None:
    code, stdout, stderr = run_on_terminal(
        "call", target, "process_large_file", csv_input(300), "--no-progress"
    )
    assert code == 0, stderr
    assert json_lines(stdout) == process_file_output(300)
    assert "%|" not in stderr
    assert stderr == ""


def test_progress_flags_are_exclusive(target: str) -> None:
    result = run("call", target, "stream_data", "--progress", "--no-progress")
    assert result.returncode == 2
    assert "not allowed with" in result.stderr


# -- list ------------------------------------------------------------------------------------


def test_list_prints_each_function_with_its_method(target: str) -> None:
    result = run("list", target)
    assert result.returncode == 0, result.stderr
    headings = {
        line.split()[0]: line.split()[1:]
        for line in result.stdout.splitlines()
        if line and not line.startswith(" ")
    }
    assert headings == {
        "process_large_file": ["POST", "stream"],
        "stream_chat": ["POST", "stream", "resumable"],
        "stream_data": ["GET", "stream"],
    }
    assert "token by token" in result.stdout  # stream_chat's description


def test_list_json_carries_the_input_schemas(target: str) -> None:
    result = run("list", target, "--json")
    assert result.returncode == 0, result.stderr
    listing = {entry["name"]: entry for entry in json.loads(result.stdout)}
    assert sorted(listing) == ["process_large_file", "stream_chat", "stream_data"]
    chat = listing["stream_chat"]
    assert chat["method"] == "POST"
    assert chat["streaming"] is True
    assert chat["input_required"] is True
    assert "message" in chat["input_schema"]["properties"]
    assert listing["stream_data"]["takes_input"] is False
    assert "file" in listing["process_large_file"]["input_schema"]["properties"]


def test_list_says_which_functions_are_resumable(server: RunningServer) -> None:
    result = run("list", server.target, "--json")
    assert result.returncode == 0, result.stderr
    listing = {entry["name"]: entry for entry in json.loads(result.stdout)}
    assert listing["resumable_ticks"]["resumable"] is True
    assert listing["count_async"]["resumable"] is False
    result = run("list", server.target)
    assert result.returncode == 0, result.stderr
    headings = {
        line.split()[0]: line.split()[1:]
        for line in result.stdout.splitlines()
        if line and not line.startswith(" ")
    }
    assert headings["resumable_ticks"] == ["GET", "stream", "resumable"]
    assert headings["count_async"] == ["GET", "stream"]


def test_list_with_a_header_still_works(target: str) -> None:
    result = run("list", target, "-H", "x-token: abc")
    assert result.returncode == 0, result.stderr
    assert "stream_data" in result.stdout


# -- serve -----------------------------------------------------------------------------------


def test_serve_logs_the_bound_address_for_port_0(demo_server: ServerProcess, target: str) -> None:
    line = demo_server.wait_for_line(SERVING)
    match = SERVING.search(line)
    assert match is not None
    assert match.group(1) == "3"
    assert int(match.group(3)) > 0
    assert "insecure" in line
    with Client(target, timeout=PROMPTLY) as client:
        assert list(client.invoke("stream_data")) == STREAM_DATA


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("nonexistent_module:fns", "no module named 'nonexistent_module'"),
        ("examples/no_such_file.py:fns", "no such file"),
        ("tests/app.py:no_such_registry", "is not a grpc_serverfn.Registry"),
        ("{no_registry}", "holds 0 Registry objects"),
    ],
    ids=["no-module", "no-file", "no-attribute", "no-registry"],
)
def test_serve_with_a_bad_app_spec_exits_2(tmp_path: Path, spec: str, expected: str) -> None:
    module = tmp_path / "plain_module.py"
    module.write_text("VALUE = 1\n")
    result = run("serve", spec.format(no_registry=module), "--port", "0")
    assert result.returncode == 2
    assert expected in result.stderr
    assert "grpc-serverfn: error:" in result.stderr
    assert "Traceback" not in result.stderr
    assert "serving" not in result.stderr


def test_sigterm_shuts_down_gracefully() -> None:
    with serving(DEMO_SPEC, "--port", "0", "--grace", "5") as server:
        address = server.wait_serving()
        with Client(address, timeout=PROMPTLY) as client:
            assert list(client.invoke("stream_data")) == STREAM_DATA
        server.signal(signal.SIGTERM)
        assert server.wait(5) == 0, server.log
        assert "SIGTERM received: shutting down (grace 5.0s)" in server.log
        assert "grpc-serverfn stopped" in server.log


def test_second_sigterm_during_grace_exits_at_once() -> None:
    env = server_env(DEMO_TOKEN_SECONDS="0.5")
    with serving(DEMO_SPEC, "--port", "0", "--grace", "30", env=env) as server:
        address = server.wait_serving()
        with Client(address, timeout=PROMPTLY) as client:
            stream = client.invoke("stream_chat", {"message": "a long message " * 20})
            with stream:
                first = next(stream)
                assert set(first) == {"text"}
                # The stream still has dozens of half-second tokens to go: the server must
                # wait for it through the grace period, until told again.
                server.signal(signal.SIGTERM)
                server.wait_for_line("SIGTERM received: shutting down")
                assert set(next(stream)) == {"text"}  # the call goes on through the grace
                assert server.process.poll() is None
                server.signal(signal.SIGTERM)
                started = time.monotonic()
                code = server.wait(PROMPTLY)
                assert time.monotonic() - started < 5, "the second SIGTERM did not exit at once"
        assert code == 128 + signal.SIGTERM
        assert "SIGTERM received again: exiting now" in server.log
        assert "grpc-serverfn stopped" not in server.log


# -- known bugs: these describe correct behaviour the package does not have yet ----------------


def test_call_exits_quietly_when_stdout_is_closed_early(target: str) -> None:
    """``grpc-serverfn call ... | head -1``: no traceback once the reader has gone."""
    data = json.dumps({"message": "word " * 1500})  # some 1500 tokens: still streaming
    process = subprocess.Popen(
        [SCRIPT, "call", target, "stream_chat", data],
        cwd=ROOT,
        env=server_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        assert json.loads(process.stdout.readline()) == {"text": "You "}
        process.stdout.close()  # as `head -1` does once it has its line
        stderr = process.stderr.read()
        process.wait(PROMPTLY)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(PROMPTLY)
        process.stderr.close()
    assert "Traceback" not in stderr
    assert "BrokenPipeError" not in stderr


def test_serve_reports_a_missing_dependency_of_the_app_by_its_name(tmp_path: Path) -> None:
    """An app module that imports a missing package must not be reported as missing itself."""
    (tmp_path / "orders_service.py").write_text(
        "import orders  # not installed\nfrom grpc_serverfn import Registry\nfns = Registry()\n"
    )
    result = run("serve", "orders_service:fns", "--port", "0", cwd=tmp_path)
    assert result.returncode != 0
    assert "no module named 'orders_service'" not in result.stderr.lower()
    assert "no module named 'orders'" in result.stderr.lower()


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--max-concurrent-calls", "0", "Limits.max_concurrent_calls must be a positive"),
        ("--max-message-bytes", "-1", "Limits.max_message_bytes must be a positive"),
        ("--max-pending-calls", "0", "Limits.max_pending_calls must be a positive"),
        ("--max-pending-seconds", "0", "Limits.max_pending_seconds must be a positive"),
        ("--stream-retention", "0", "StreamOptions.retention must be a positive"),
    ],
)
def test_serve_with_a_limit_out_of_range_exits_2(flag: str, value: str, expected: str) -> None:
    result = run("serve", DEMO_SPEC, "--port", "0", flag, value)
    assert result.returncode == 2
    assert f"grpc-serverfn: error: {expected}" in result.stderr
    assert "Traceback" not in result.stderr
    assert "serving" not in result.stderr


def test_serve_on_a_port_in_use_fails_with_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", DEMO_SPEC, "--port", str(port))
    assert result.returncode != 0
    assert f"127.0.0.1:{port}" in result.stderr
    assert "grpc-serverfn: error:" in result.stderr
    assert "Traceback" not in result.stderr


def test_health_exits_0_and_prints_serving_while_the_server_is_up(target: str) -> None:
    result = run("health", target)
    assert (result.returncode, result.stdout) == (0, "SERVING\n")
    service = run("health", target, "--service", "serverfn.v1.ServerFunctions")
    assert (service.returncode, service.stdout) == (0, "SERVING\n")


def test_health_of_an_unknown_service_is_not_found(target: str) -> None:
    result = run("health", target, "--service", "no.such.Service")
    assert result.returncode == 64 + 5
    assert "NOT_FOUND" in result.stderr


def test_health_of_an_unreachable_server_fails_clearly() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run("health", f"127.0.0.1:{port}", "--timeout", "5")
    assert result.returncode == 64 + 14
    assert "UNAVAILABLE" in result.stderr
    assert "Traceback" not in result.stderr
