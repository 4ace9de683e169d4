"""The demo app (examples/demo.py) end to end: a real server, both clients, both encodings."""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import pytest

from grpc_serverfn import (
    FailedPrecondition,
    InvalidArgument,
)
from grpc_serverfn.testing import RunningServer
from tests.conftest import Caller

STREAM_DATA = [{"progress": 0}, {"progress": 33}, {"progress": 66}, {"progress": 100, "done": True}]


@pytest.fixture(scope="module")
def server(demo_server: RunningServer) -> RunningServer:
    """`invoke` calls the demo here."""
    return demo_server


def csv_text(rows: int) -> str:
    return "id,name\n" + "".join(f"{i},name-{i}\n" for i in range(rows))


ENCODINGS = pytest.mark.parametrize("encoding", ["json", "value"])


@ENCODINGS
def test_stream_data_reports_progress_in_order(invoke: Caller, encoding: str) -> None:
    outcome = invoke("stream_data", encoding=encoding)
    assert outcome.error is None
    assert outcome.chunks == STREAM_DATA
    assert all(type(chunk["progress"]) is int for chunk in outcome.chunks)


@ENCODINGS
def test_stream_chat_streams_the_local_reply(
    invoke: Caller, demo: ModuleType, encoding: str
) -> None:
    outcome = invoke("stream_chat", {"message": "hi"}, encoding=encoding)
    assert outcome.error is None
    assert len(outcome.chunks) > 3
    assert all(set(chunk) == {"text"} for chunk in outcome.chunks)
    assert "".join(chunk["text"] for chunk in outcome.chunks) == demo.local_reply("hi")


@pytest.mark.parametrize(
    "data",
    [{}, {"message": ""}, {"message": 5}, {"message": "x" * 8001}],
    ids=["missing", "empty", "not-a-string", "too-long"],
)
def test_stream_chat_rejects_invalid_input(invoke: Caller, data: Any) -> None:
    outcome = invoke("stream_chat", data)
    assert outcome.chunks == []
    assert isinstance(outcome.error, InvalidArgument)
    assert "stream_chat" in outcome.error.message
    assert "message" in [field for field, _ in outcome.error.field_violations]


def test_stream_chat_without_input_is_invalid(invoke: Caller) -> None:
    outcome = invoke("stream_chat")
    assert outcome.chunks == []
    assert isinstance(outcome.error, InvalidArgument)


def test_stream_chat_with_api_key_but_no_openai_package_fails_precondition(
    invoke: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    # The server runs in this process: make `import openai` fail as it does where the
    # package is not installed (it is installed for tests/test_demo_openai.py).
    monkeypatch.setitem(sys.modules, "openai", None)
    outcome = invoke("stream_chat", {"message": "hi"})
    assert outcome.chunks == []
    assert isinstance(outcome.error, FailedPrecondition)
    assert "openai" in outcome.error.message


@ENCODINGS
def test_process_large_file_reports_every_100_records(invoke: Caller, encoding: str) -> None:
    outcome = invoke("process_large_file", {"file": csv_text(250)}, encoding=encoding)
    assert outcome.error is None
    assert outcome.chunks == [
        {"processed": 0, "total": 250, "percent": 0},
        {"processed": 100, "total": 250, "percent": 40},
        {"processed": 200, "total": 250, "percent": 80},
        {"processed": 250, "total": 250, "percent": 100, "complete": True},
    ]
    for chunk in outcome.chunks:
        assert type(chunk["percent"]) is int
        assert type(chunk["processed"]) is int


def test_process_large_file_names_the_bad_line(invoke: Caller) -> None:
    text = "id,name\n1,a\n2,b\n3,c,extra\n4,d\n"
    outcome = invoke("process_large_file", {"file": text})
    assert outcome.chunks == []
    assert isinstance(outcome.error, InvalidArgument)
    assert "line 4" in outcome.error.message
    violations = outcome.error.field_violations
    assert [field for field, _ in violations] == ["file"]
    assert "line 4" in violations[0][1]
    assert "expected 2 fields, got 3" in violations[0][1]


def test_process_large_file_rejects_an_empty_file(invoke: Caller) -> None:
    outcome = invoke("process_large_file", {"file": ""})
    assert outcome.chunks == []
    assert isinstance(outcome.error, InvalidArgument)
    assert "empty" in outcome.error.message
    assert [field for field, _ in outcome.error.field_violations] == ["file"]


def test_process_large_file_with_only_a_header_completes(invoke: Caller) -> None:
    outcome = invoke("process_large_file", {"file": "id,name\n"})
    assert outcome.error is None
    assert outcome.chunks == [{"processed": 0, "total": 0, "percent": 100, "complete": True}]


def test_breaking_out_of_stream_data_early_sync(server: RunningServer) -> None:
    with server.client(timeout=30) as client:
        received = []
        for chunk in client.invoke("stream_data"):
            received.append(chunk)
            if chunk["progress"] == 33:
                break
        assert received == STREAM_DATA[:2]
        # The same channel still serves the next call, start to finish.
        assert list(client.invoke("stream_data")) == STREAM_DATA


async def test_breaking_out_of_stream_data_early_async(server: RunningServer) -> None:
    async with server.async_client(timeout=30) as client:
        received = []
        async for chunk in client.invoke("stream_data"):
            received.append(chunk)
            if chunk["progress"] == 33:
                break
        assert received == STREAM_DATA[:2]
        assert [chunk async for chunk in client.invoke("stream_data")] == STREAM_DATA


def test_functions_lists_the_three_demo_functions(server: RunningServer) -> None:
    with server.client(timeout=30) as client:
        infos = {info.name: info for info in client.functions()}
    assert sorted(infos) == ["process_large_file", "stream_chat", "stream_data"]
    assert infos["stream_data"].method == "GET"
    assert infos["stream_chat"].method == "POST"
    assert infos["process_large_file"].method == "POST"
    assert all(info.streaming for info in infos.values())
    chat_schema = infos["stream_chat"].input_schema
    assert chat_schema is not None
    assert "message" in chat_schema["properties"]
