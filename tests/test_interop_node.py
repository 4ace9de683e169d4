"""A Node.js service calls the toolkit: @grpc/grpc-js with stubs loaded from protos/ at run time.

tests/interop/node/client.js runs one scenario per process against a real server in this
process and prints what it observed as JSON; the assertions are here. The demo app and the test
app are two registries, so they are two servers. scripts/test installs the Node packages
(``npm ci --prefix tests/interop/node``); this module does not.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import google.rpc
import pytest

from grpc_serverfn.testing import RunningServer, run_in_thread
from tests import app

NODE_DIR = Path(__file__).resolve().parent / "interop" / "node"
CLIENT = NODE_DIR / "client.js"
RUN_SCRIPTS_TEST = (
    "run scripts/test (it runs `npm ci --prefix tests/interop/node`), "
    "or run that npm command yourself"
)

STREAM_DATA = [{"progress": 0}, {"progress": 33}, {"progress": 66}, {"progress": 100, "done": True}]

OK, CANCELLED, INVALID_ARGUMENT, NOT_FOUND = 0, 1, 3, 5
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"

RunNode = Callable[..., dict[str, Any]]


@pytest.fixture(scope="module")
def node() -> str:
    """The node executable, once the packages package-lock.json pins are installed."""
    found = shutil.which("node")
    if found is None:
        pytest.fail("node (Node.js 18+) is not on PATH; tests/test_interop_node.py needs it")
    wanted = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]
    for package, version in wanted.items():
        manifest = NODE_DIR / "node_modules" / package / "package.json"
        if not manifest.is_file():
            pytest.fail(
                f"{package} is not installed in {NODE_DIR / 'node_modules'}: {RUN_SCRIPTS_TEST}"
            )
        installed = json.loads(manifest.read_text())["version"]
        if installed != version:
            pytest.fail(
                f"{package} {installed} is installed but package.json pins {version}: "
                f"{RUN_SCRIPTS_TEST}"
            )
    return found


@pytest.fixture(scope="module")
def googleapis_protos() -> Path:
    """The include directory of google/rpc/*.proto, as googleapis-common-protos installs them."""
    for directory in google.rpc.__path__:
        if (Path(directory) / "status.proto").is_file():
            return Path(directory).parent.parent
    pytest.fail("googleapis-common-protos ships no google/rpc/status.proto here")


@pytest.fixture(scope="module")
def app_server() -> Iterator[RunningServer]:
    with run_in_thread(app.fns) as running:
        yield running


@pytest.fixture
def run_node(node: str, googleapis_protos: Path) -> RunNode:
    """Run one client.js scenario against a server; return the JSON document it printed."""

    def run(server: RunningServer, scenario: str, *args: str) -> dict[str, Any]:
        command = [
            node,
            str(CLIENT),
            server.target,
            scenario,
            *args,
            f"--googleapis-protos={googleapis_protos}",
        ]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(
                f"client.js {scenario} could not run (exit {result.returncode}):\n{result.stderr}"
            )
        observed: dict[str, Any] = json.loads(result.stdout)
        assert observed["scenario"] == scenario
        return observed

    return run


def test_stream_data_arrives_as_json_chunks_in_order(
    run_node: RunNode, demo_server: RunningServer
) -> None:
    observed = run_node(demo_server, "stream_data_json")
    assert observed["status"]["code"] == OK
    assert observed["chunks"] == [
        {"seq": seq, "payload": "json", "data": data} for seq, data in enumerate(STREAM_DATA)
    ]


@pytest.mark.parametrize("scenario", ["stream_chat_value", "stream_chat_json"])
def test_stream_chat_arrives_as_value_chunks(
    run_node: RunNode, demo_server: RunningServer, demo: ModuleType, scenario: str
) -> None:
    # stream_chat_value sends google.protobuf.Value input (value chunks mirror it);
    # stream_chat_json sends JSON text and asks for ENCODING_VALUE.
    observed = run_node(demo_server, scenario)
    assert observed["status"]["code"] == OK
    chunks = observed["chunks"]
    assert len(chunks) > 3
    assert [chunk["seq"] for chunk in chunks] == list(range(len(chunks)))
    assert {chunk["payload"] for chunk in chunks} == {"value"}
    assert all(set(chunk["data"]) == {"text"} for chunk in chunks)
    assert "".join(chunk["data"]["text"] for chunk in chunks) == demo.local_reply("hi")


def test_cancelling_from_node_runs_the_handlers_cleanup(
    run_node: RunNode, app_server: RunningServer
) -> None:
    key = f"node-cancel-{uuid.uuid4().hex}"
    observed = run_node(app_server, "cancel", key)
    assert observed["cancelled_after_seq"] == 0
    assert observed["chunks"][0] == {"seq": 0, "payload": "json", "data": 0}
    # wait_async yields 0 and 1, then waits 30 s before yielding -1: Node cancelled it mid-call.
    assert [chunk["data"] for chunk in observed["chunks"]] in ([0], [0, 1])
    assert observed["status"]["code"] == CANCELLED
    record = app.probe(key)
    assert record.started.is_set()
    assert record.cleaned_up.wait(5)


def test_invalid_input_gives_a_bad_request_naming_the_field(
    run_node: RunNode, demo_server: RunningServer
) -> None:
    observed = run_node(demo_server, "invalid")
    assert observed["chunks"] == []
    status = observed["status"]
    assert status["code"] == INVALID_ARGUMENT
    assert "stream_chat" in status["details"]
    assert "message" in status["details"]
    assert "grpc-status-details-bin" in status["metadata_keys"]
    rpc_status = status["rpc_status"]
    assert rpc_status["code"] == INVALID_ARGUMENT
    assert rpc_status["message"] == status["details"]
    [detail] = rpc_status["details"]
    assert detail["type_url"] == BAD_REQUEST
    [violation] = detail["field_violations"]
    assert violation["field"] == "message"
    assert violation["description"]


def test_an_unknown_function_is_not_found(run_node: RunNode, demo_server: RunningServer) -> None:
    observed = run_node(demo_server, "not_found", "no_such_function")
    assert observed["chunks"] == []
    status = observed["status"]
    assert status["code"] == NOT_FOUND
    assert "no_such_function" in status["details"]
    assert status["rpc_status"]["code"] == NOT_FOUND
    assert status["rpc_status"]["message"] == status["details"]


def test_list_functions_describes_the_demo(run_node: RunNode, demo_server: RunningServer) -> None:
    observed = run_node(demo_server, "list")
    infos = {info["name"]: info for info in observed["functions"]}
    assert [info["name"] for info in observed["functions"]] == [
        "process_large_file",
        "stream_chat",
        "stream_data",
    ]
    assert {name: info["method"] for name, info in infos.items()} == {
        "process_large_file": "METHOD_POST",
        "stream_chat": "METHOD_POST",
        "stream_data": "METHOD_GET",
    }
    assert all(info["streaming"] for info in infos.values())
    chat = infos["stream_chat"]
    assert chat["takes_input"] is True
    assert chat["input_required"] is True
    assert chat["input_schema"]["properties"]["message"]["type"] == "string"
    assert "message" in chat["input_schema"]["required"]
    assert infos["stream_data"]["takes_input"] is False
    assert infos["stream_data"]["input_schema"] is None
