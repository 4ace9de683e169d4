"""Shared fixtures: one real server for the test app, and both clients behind one helper."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest

from grpc_serverfn import ServerFnError
from grpc_serverfn._proto.serverfn.v1 import serverfn_pb2_grpc
from grpc_serverfn.testing import RunningServer, run_in_thread
from tests import app
from tests.redis_server import running_redis

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@contextlib.contextmanager
def imported_example(name: str, **env: str) -> Iterator[ModuleType]:
    """Import ``examples/<name>.py`` under a private module name, with ``env`` set meanwhile
    (the demo reads its delays at import time)."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        module_name = f"grpc_serverfn_example_{name}"
        spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        patch.setitem(sys.modules, module_name, module)
        spec.loader.exec_module(module)
        yield module


@pytest.fixture(scope="session")
def demo() -> Iterator[ModuleType]:
    """examples/demo.py, imported with short delays (it reads them at import time)."""
    with imported_example("demo", DEMO_STEP_SECONDS="0.005", DEMO_TOKEN_SECONDS="0.001") as module:
        yield module


@pytest.fixture(scope="session")
def demo_server(demo: ModuleType) -> Iterator[RunningServer]:
    """The demo app served from a background thread for the whole session."""
    with run_in_thread(demo.fns) as running:
        yield running


@pytest.fixture(autouse=True)
def _no_openai_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo streams from OpenAI when OPENAI_API_KEY is set; tests want the local reply
    unless they set it themselves."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def generated_files(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def run_script(
    script: str, *arguments: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/<script> ARGUMENTS...`` from the repository root, capturing its output."""
    return subprocess.run(
        [str(ROOT / "scripts" / script), *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def regenerate(script: str, out: Path) -> None:
    """Run a generator, ``scripts/<script> OUT``, with this interpreter's tools."""
    result = run_script(script, str(out), env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, f"scripts/{script} failed:\n{result.stdout}{result.stderr}"


def assert_same_files(fresh_dir: Path, committed: Path, script: str) -> None:
    """The committed generated code equals a fresh run of its generator, byte for byte."""
    hint = f"{committed.relative_to(ROOT)} is out of date: run scripts/{script} and commit it"
    fresh, current = generated_files(fresh_dir), generated_files(committed)
    assert fresh, f"scripts/{script} generated nothing in {fresh_dir.name}"
    assert sorted(fresh) == sorted(current), f"{hint} (the set of generated files differs)"
    stale = [name for name in fresh if fresh[name] != current[name]]
    assert not stale, f"{hint} (these differ: {', '.join(stale)})"


@pytest.fixture(scope="session")
def server() -> Iterator[RunningServer]:
    """The test app served from a background thread for the whole session."""
    with run_in_thread(app.fns) as running:
        yield running


def drain(stream: Iterable[Any], *, into: list[Any]) -> None:
    """Read a stream to its end, keeping what arrived before any error (inside pytest.raises)."""
    for item in stream:
        into.append(item)


@dataclasses.dataclass
class Outcome:
    """Every chunk a call delivered, and the error it ended with (None: it ended OK)."""

    chunks: list[Any]
    error: ServerFnError | None


class Caller:
    """Makes one call through Client or AsyncClient and reports the outcome the same way."""

    def __init__(self, kind: str, target: str) -> None:
        self.kind = kind
        self.target = target

    def __call__(self, function: str, data: Any = None, **options: Any) -> Outcome:
        client_options = {key: options.pop(key) for key in ("encoding",) if key in options}
        if self.kind == "sync":
            return self._sync(function, data, client_options, options)
        return asyncio.run(self._async(function, data, client_options, options))

    def _sync(self, function: str, data: Any, client_options: Any, options: Any) -> Outcome:
        from grpc_serverfn import Client

        chunks: list[Any] = []
        with Client(self.target, **client_options) as client:
            try:
                for chunk in client.invoke(function, data, **options):
                    chunks.append(chunk)
            except ServerFnError as error:
                return Outcome(chunks, error)
        return Outcome(chunks, None)

    async def _async(self, function: str, data: Any, client_options: Any, options: Any) -> Outcome:
        from grpc_serverfn import AsyncClient

        chunks: list[Any] = []
        async with AsyncClient(self.target, **client_options) as client:
            try:
                async for chunk in client.invoke(function, data, **options):
                    chunks.append(chunk)
            except ServerFnError as error:
                return Outcome(chunks, error)
        return Outcome(chunks, None)


@pytest.fixture(params=["sync", "async"])
def invoke(request: pytest.FixtureRequest, server: RunningServer) -> Caller:
    """Call a test-app function through Client, then again through AsyncClient."""
    return Caller(request.param, server.target)


@pytest.fixture
def stub(server: RunningServer) -> Iterator[serverfn_pb2_grpc.ServerFunctionsStub]:
    """A plain grpcio stub, to see the wire messages themselves (seq numbers, encodings)."""
    with grpc.insecure_channel(server.target) as channel:
        yield serverfn_pb2_grpc.ServerFunctionsStub(channel)  # type: ignore[no-untyped-call]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server on a free port for the whole session; its URL."""
    with running_redis() as url:
        yield url
