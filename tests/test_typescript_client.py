"""The TypeScript client (clients/typescript) and peers no one here wrote, against a real web
port: the package builds with ``tsc --strict``; its generated code matches the proto; Node's
test runner drives the client over Connect JSON, Connect binary and gRPC-Web, and a plain
@connectrpc/connect-node client; ``buf curl`` speaks Connect and gRPC-Web to it.

One server (the test app, with a web port) serves every Node test; a TCP proxy in front of its
web port lets the Node tests cut their connections, and a second small server (``control``)
is how they ask this process to cut them, or what a handler's cleanup did. scripts/test
installs the Node packages (``npm ci`` in clients/typescript) and builds the package.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from grpc_serverfn import Registry
from grpc_serverfn.testing import RunningServer, run_in_thread
from tests import app, typed_app
from tests.conftest import assert_same_files, imported_example, regenerate
from tests.tcp_proxy import TcpProxy, proxy_to

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "clients" / "typescript"
BIN = PACKAGE / "node_modules" / ".bin"
RUN_SCRIPTS_TEST = "run scripts/test (it runs `npm ci` in clients/typescript and builds it)"
INVOKE = "serverfn.v1.ServerFunctions/Invoke"


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{path.relative_to(ROOT)} is missing: {RUN_SCRIPTS_TEST}")
    return str(path)


def _run(command: list[str], timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=PACKAGE,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node (Node.js 20+) is not on PATH; tests/test_typescript_client.py needs it")
    return found


@pytest.fixture(scope="module")
def built() -> None:
    """The package (dist/, which examples/ import by the package's name) and its tests and
    examples (build/) compiled with tsc, strictly: a type error fails here."""
    for config in ("tsconfig.json", "tsconfig.test.json"):
        result = _run([_tool("tsc"), "-p", config])
        assert result.returncode == 0, f"tsc -p {config} failed:\n{result.stdout}{result.stderr}"


@pytest.fixture(scope="module")
def web_server() -> Iterator[RunningServer]:
    with run_in_thread(app.fns, web_port=0) as running:
        yield running


@pytest.fixture(scope="module")
def examples_servers() -> Iterator[tuple[RunningServer, RunningServer]]:
    """examples/demo.py and examples/resumable.py with web ports, for examples/browser.ts."""
    with (
        imported_example("demo", DEMO_STEP_SECONDS="0.001", DEMO_TOKEN_SECONDS="0.001") as demo,
        imported_example("resumable", DEMO_TOKEN_SECONDS="0.02") as resumable,
        run_in_thread(demo.fns, web_port=0) as demo_server,
        run_in_thread(resumable.fns, web_port=0) as resumable_server,
    ):
        yield demo_server, resumable_server


@pytest.fixture(scope="module")
def typed_server() -> Iterator[RunningServer]:
    """tests/typed_app.py, for the module codegen wrote from it (test/codegen.test.ts)."""
    with run_in_thread(typed_app.fns, web_port=0) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(web_server: RunningServer) -> Iterator[TcpProxy]:
    with proxy_to(web_server.web_url.removeprefix("http://")) as running:
        yield running


def control_registry(proxy: TcpProxy, upstream: str) -> Registry:
    """What the Node tests ask of this process: cut the proxy's connections, send its new
    connections nowhere for a while, and what a test app handler's cleanup did."""
    control = Registry()

    @control.server_fn
    def drop() -> int:
        """Cut every connection through the proxy; how many it accepted so far."""
        proxy.drop()
        return proxy.connections

    @control.server_fn
    def connections() -> int:
        return proxy.connections

    @control.server_fn
    def outage(data: float) -> None:
        """New connections through the proxy fail for ``data`` seconds (then reach the server)."""
        proxy.upstream = "127.0.0.1:1"  # nothing listens there
        proxy.drop()
        threading.Timer(data, lambda: setattr(proxy, "upstream", upstream)).start()

    @control.server_fn
    def cleaned_up(data: str) -> dict[str, bool]:
        """Waits (up to 10 s) for the handler probed as ``data`` to run its cleanup."""
        probe = app.probe(data)
        return {
            "cleaned_up": probe.cleaned_up.wait(10),
            "cancelled_seen": probe.cancelled_seen.is_set(),
        }

    return control


@pytest.fixture(scope="module")
def control(proxy: TcpProxy, web_server: RunningServer) -> Iterator[RunningServer]:
    upstream = web_server.web_url.removeprefix("http://")
    with run_in_thread(control_registry(proxy, upstream), web_port=0) as running:
        yield running


def test_generated_typescript_has_not_drifted_from_the_proto(tmp_path: Path) -> None:
    _tool("protoc-gen-es")
    regenerate("gen-ts", tmp_path / "gen")
    assert_same_files(tmp_path / "gen", PACKAGE / "src" / "gen", "gen-ts")


def test_node_tests_pass_over_every_protocol(
    node: str,
    built: None,
    web_server: RunningServer,
    proxy: TcpProxy,
    control: RunningServer,
    examples_servers: tuple[RunningServer, RunningServer],
    typed_server: RunningServer,
) -> None:
    """clients/typescript/test/*.test.ts, compiled, in one `node --test` run (its files run in
    parallel): the client over three protocols, the docs' examples, the connect-node peer,
    the module `codegen typescript` wrote for tests/typed_app.py."""
    demo, resumable = examples_servers
    result = _run(
        [node, "--test", "--test-reporter=tap", "build/test/"],
        timeout=180,
        SERVERFN_WEB_URL=web_server.web_url,
        SERVERFN_PROXY_URL=f"http://{proxy.address}",
        SERVERFN_CONTROL_URL=control.web_url,
        SERVERFN_DEMO_URL=demo.web_url,
        SERVERFN_RESUMABLE_URL=resumable.web_url,
        SERVERFN_TYPED_URL=typed_server.web_url,
    )
    summary = dict(re.findall(r"^# (pass|fail|cancelled|skipped|todo) (\d+)$", result.stdout, re.M))
    failed = f"node --test failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
    assert result.returncode == 0, failed
    assert summary.get("fail") == "0", failed
    assert int(summary["pass"]) >= 58, summary  # every file ran, every protocol's tests too


def _buf_curl(protocol: str, url: str, data: dict[str, Any], method: str = INVOKE) -> list[Any]:
    result = _run(
        [
            _tool("buf"),
            "curl",
            "--schema",
            str(ROOT / "protos"),
            "--protocol",
            protocol,
            "--data",
            json.dumps(data),
            f"{url}/{method}",
        ],
        timeout=60,
    )
    assert result.returncode == 0, f"buf curl failed:\n{result.stdout}{result.stderr}"
    # buf curl prints each response message as indented JSON, one after another.
    decoder, text, messages, at = json.JSONDecoder(), result.stdout, [], 0
    while (at := _skip_space(text, at)) < len(text):
        message, at = decoder.raw_decode(text, at)
        messages.append(message)
    return messages


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


@pytest.mark.parametrize("protocol", ["connect", "grpcweb"])
def test_buf_curl_streams_chunks_from_the_web_port(
    protocol: str, web_server: RunningServer
) -> None:
    chunks = _buf_curl(
        protocol, web_server.web_url, {"function": "count_async", "json": '{"n": 3}'}
    )
    # proto3 JSON leaves seq 0 out, as the proto says.
    assert chunks == [{"json": "0"}, {"json": "1", "seq": 1}, {"json": "2", "seq": 2}]
    [listing] = _buf_curl(
        protocol, web_server.web_url, {}, "serverfn.v1.ServerFunctions/ListFunctions"
    )
    assert {info["name"] for info in listing["functions"]} == {fn.name for fn in app.fns}


def test_buf_curl_reports_an_error_with_its_details(web_server: RunningServer) -> None:
    result = _run(
        [
            _tool("buf"),
            "curl",
            "--schema",
            str(ROOT / "protos"),
            "--protocol",
            "connect",
            "--data",
            json.dumps({"function": "count_async", "json": '{"n": -1}'}),
            f"{web_server.web_url}/{INVOKE}",
        ],
        timeout=60,
    )
    assert result.returncode != 0
    error = json.loads(result.stderr)
    assert error["code"] == "invalid_argument"
    assert [detail["type"] for detail in error["details"]] == ["google.rpc.BadRequest"]
