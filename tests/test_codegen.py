"""``grpc-serverfn codegen python``: from a running server and from --app, the same module;
it imports, its models cover every schema feature of tests/typed_app.py, its typed classes
call the server and return model instances; ``--check`` catches drift."""

from __future__ import annotations

import enum
import importlib.util
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pydantic
import pytest

from grpc_serverfn import AsyncClient, Client
from grpc_serverfn.testing import RunningServer, run_in_thread
from tests import typed_app
from tests.conftest import EXAMPLES
from tests.processes import run_cli

APP = "tests.typed_app:fns"


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with run_in_thread(typed_app.fns) as running:
        yield running


@pytest.fixture(scope="module")
def generated(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module codegen wrote from the running server."""
    path = tmp_path_factory.mktemp("codegen") / "typed_serverfns.py"
    result = run_cli("codegen", "python", server.target, "-o", str(path))
    assert result.returncode == 0, result.stderr
    assert f"wrote {path} (8 function(s))" in result.stderr
    return path


@pytest.fixture(scope="module")
def module(generated: Path) -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("typed_serverfns", generated)
    assert spec is not None
    assert spec.loader is not None
    imported = importlib.util.module_from_spec(spec)
    sys.modules["typed_serverfns"] = imported
    try:
        spec.loader.exec_module(imported)
        yield imported
    finally:
        del sys.modules["typed_serverfns"]


def test_the_app_and_the_running_server_give_the_same_module(
    generated: Path, tmp_path: Path
) -> None:
    from_app = tmp_path / "from_app.py"
    result = run_cli("codegen", "python", "--app", APP, "-o", str(from_app))
    assert result.returncode == 0, result.stderr
    assert from_app.read_text() == generated.read_text()


def test_the_models_cover_each_schema_feature(module: ModuleType) -> None:
    m = module
    # Nested models from $defs, an enum with its default member, optionals, defaults, lists.
    person = m.GreetInput.model_fields
    assert person["home"].annotation is m.Address
    assert person["previous"].annotation == list[m.Address]
    assert person["favourite"].default is m.Colour.green
    assert issubclass(m.Colour, enum.Enum)
    assert {c.value for c in m.Colour} == {"red", "green"}
    assert person["age"].annotation == int | None
    assert person["age"].default is None
    assert person["name"].is_required()
    assert m.Address.model_fields["city"].default == "Paris"
    # A union of models, and scalars as input and chunk, as aliases.
    assert m.AreasChunk.model_fields["shape"].annotation == m.Circle | m.Square
    assert m.CountdownInput.__value__ is int
    assert m.CountdownChunk.__value__ is int
    assert m.GetOrderInput.__value__ is str
    assert m.MaybeTotalInput.__value__ == list[float] | None
    # No input: no type; no output annotation and `data: Any`: any JSON.
    assert not hasattr(m, "ProgressInput")
    assert m.AnythingInput.__value__ is typing.Any
    assert m.AnythingChunk.__value__ is typing.Any
    assert issubclass(m.GetOrderChunk, pydantic.BaseModel)


def test_the_typed_class_calls_the_server_and_returns_models(
    module: ModuleType, server: RunningServer
) -> None:
    m = module
    with Client(server.target) as client:
        fns = m.ServerFns(client)
        person = m.GreetInput(name="Ada", tags=["!"], home=m.Address(street="1 rue", postCode="F"))
        [greeting] = list(fns.greet(person))
        assert isinstance(greeting, m.GreetChunk)
        assert greeting.text == "Hello Ada!"
        assert greeting.colour is m.Colour.green
        assert greeting.home == m.Address(street="1 rue", city="Paris", postCode="F")
        order = fns.get_order("A1")
        assert order == m.GetOrderChunk(id="A1", total=9.5, lines=["tea", "cake"])
        assert list(fns.countdown(2)) == [2, 1, 0]
        areas = list(fns.areas(m.AreasInput(shapes=[m.Circle(radius=1), m.Square(side=2)])))
        assert [type(area.shape) for area in areas] == [m.Circle, m.Square]
        assert [area.area for area in areas] == [3.0, 4.0]
        assert [p.progress for p in fns.progress()] == [0, 50, 100]
        assert [p.done for p in fns.progress()] == [None, None, True]
        assert fns.anything([1, "two"]) == [1, "two"]
        assert fns.maybe_total() is None
        assert fns.maybe_total([1, 2]) == 3.0


async def test_the_async_class_calls_the_server_too(
    module: ModuleType, server: RunningServer
) -> None:
    m = module
    async with AsyncClient(server.target) as client:
        fns = m.AsyncServerFns(client)
        assert await fns.get_order("B") == m.GetOrderChunk(id="B", total=9.5, lines=["tea", "cake"])
        assert [p.progress async for p in fns.progress()] == [0, 50, 100]
        # The module's references work with the client itself, as the server's functions do.
        assert await client.call(m.get_order, "C") == await fns.get_order("C")


def test_check_passes_on_a_fresh_module_and_fails_when_it_drifts(
    generated: Path, server: RunningServer, tmp_path: Path
) -> None:
    fresh = run_cli("codegen", "python", server.target, "-o", str(generated), "--check")
    assert fresh.returncode == 0, fresh.stderr
    assert f"{generated} is up to date" in fresh.stderr

    # The server changes: one more function.
    changed = tmp_path / "changed_app.py"
    changed.write_text(
        "from tests.typed_app import fns\n"
        "@fns.server_fn\n"
        "def added(data: int) -> str:\n"
        "    return str(data)\n"
    )
    drift = run_cli("codegen", "python", "--app", f"{changed}:fns", "-o", str(generated), "--check")
    assert drift.returncode == 1
    assert "+class AddedChunk" not in drift.stderr  # a scalar: an alias
    assert '+AddedChunk = TypeAliasType("AddedChunk", str)' in drift.stderr
    assert f"{generated} is out of date" in drift.stderr

    # The file is edited by hand.
    edited = tmp_path / "edited.py"
    edited.write_text(generated.read_text().replace("city: str = 'Paris'", "city: str = 'Lyon'"))
    hand = run_cli("codegen", "python", "--app", APP, "-o", str(edited), "--check")
    assert hand.returncode == 1
    assert "-    city: str = 'Lyon'" in hand.stderr
    assert "+    city: str = 'Paris'" in hand.stderr

    missing = run_cli("codegen", "python", "--app", APP, "-o", str(tmp_path / "none.py"), "--check")
    assert missing.returncode == 1
    assert "run codegen without --check" in missing.stderr


def test_codegen_takes_a_server_or_an_app_not_both(tmp_path: Path) -> None:
    both = run_cli("codegen", "python", "localhost:1", "--app", APP, "-o", str(tmp_path / "x.py"))
    assert both.returncode == 2
    assert "one" in both.stderr
    unknown = run_cli("codegen", "cobol", "--app", APP, "-o", str(tmp_path / "x.py"))
    assert unknown.returncode == 2
    assert "invalid choice: 'cobol'" in unknown.stderr


def test_the_examples_generated_module_is_current() -> None:
    result = run_cli(
        "codegen",
        "python",
        "--app",
        "examples/demo.py:fns",
        "-o",
        str(EXAMPLES / "serverfns.py"),
        "--check",
    )
    assert result.returncode == 0, (
        f"{result.stderr}\nexamples/serverfns.py is stale: run grpc-serverfn codegen python"
        " --app examples/demo.py:fns -o examples/serverfns.py"
    )
