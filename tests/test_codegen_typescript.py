"""``grpc-serverfn codegen typescript``: from a running server and from --app, the same module;
its types cover every schema feature of tests/typed_app.py; tsc --strict passes correct calls
and rejects each kind of mistake; ``--check`` catches drift, and the committed modules (the
demo page's, the Node test's) are current.

That the generated functions really call a server is clients/typescript/test/codegen.test.ts,
run by tests/test_typescript_client.py with the other Node tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from grpc_serverfn.testing import RunningServer, run_in_thread
from tests import typed_app
from tests.processes import run_cli

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "clients" / "typescript"
SNIPPETS = ROOT / "tests" / "typing_snippets"
APP = f"{ROOT / 'tests' / 'typed_app.py'}:fns"
COMMITTED = PACKAGE / "test" / "typed-serverfns.gen.ts"
DEMO = ROOT / "examples" / "web" / "src" / "serverfns.gen.ts"
GENERATOR = PACKAGE / "node_modules" / "json-schema-to-typescript"
TSC_ERROR = re.compile(r"^(?P<file>[^(\s]+)\((?P<line>\d+),\d+\): error (?P<code>TS\d+)", re.M)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with run_in_thread(typed_app.fns) as running:
        yield running


@pytest.fixture(scope="module")
def generated(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The module codegen wrote from the running server, run where the TypeScript client's
    packages are: it finds json-schema-to-typescript as Node would from there."""
    if not GENERATOR.exists():
        pytest.fail(f"{GENERATOR} is missing: run scripts/test (npm ci in clients/typescript)")
    path = tmp_path_factory.mktemp("codegen") / "serverfns.gen.ts"
    result = run_cli("codegen", "typescript", server.target, "-o", str(path), cwd=PACKAGE)
    assert result.returncode == 0, result.stderr
    assert f"wrote {path} (8 function(s))" in result.stderr
    return path.read_text()


def test_the_app_and_the_running_server_give_the_committed_module(generated: str) -> None:
    assert generated == COMMITTED.read_text(), (
        f"{COMMITTED.relative_to(ROOT)} is stale: run grpc-serverfn codegen typescript --app"
        f" tests/typed_app.py:fns -o {COMMITTED.relative_to(ROOT)} (from clients/typescript)"
    )
    check = run_cli(
        "codegen", "typescript", "--app", APP, "-o", str(COMMITTED), "--check", cwd=PACKAGE
    )
    assert check.returncode == 0, check.stderr


def _declaration(module: str, name: str) -> str:
    found = re.search(
        rf"^export (?:interface {name} \{{\n(?:.*\n)*?\}}|type {name} = .*;)$", module, re.M
    )
    assert found is not None, f"no {name} in the module"
    return re.sub(r"\s+", " ", found.group(0))


def test_the_types_cover_each_schema_feature(generated: str) -> None:
    # $defs shared by input and chunk, nested models, an alias kept (postCode), defaults optional.
    assert _declaration(generated, "Address") == (
        "export interface Address { city?: string; postCode?: string; street: string; }"
    )
    greet_input = _declaration(generated, "GreetInput")
    for field in (
        "age?: number | null;",  # an optional
        'favourite?: "red" | "green";',  # an enum with a default
        "home: Address;",  # a nested model, required
        "name: string;",
        "previous?: Address[];",  # a list of models
        "tags?: string[];",
    ):
        assert field in greet_input, greet_input
    assert _declaration(generated, "Colour") == 'export type Colour = "red" | "green";'
    assert "colour: Colour;" in _declaration(generated, "GreetChunk")
    # Unions, discriminated by a literal.
    assert "shapes: (Circle | Square)[];" in _declaration(generated, "AreasInput")
    assert "shape: Circle | Square;" in _declaration(generated, "AreasChunk")
    assert 'kind?: "circle";' in _declaration(generated, "Circle")
    # Scalars as input and chunk; an optional input; no input; no output annotation.
    assert _declaration(generated, "CountdownInput") == "export type CountdownInput = number;"
    assert _declaration(generated, "CountdownChunk") == "export type CountdownChunk = number;"
    assert _declaration(generated, "GetOrderInput") == "export type GetOrderInput = string;"
    assert _declaration(generated, "MaybeTotalInput") == (
        "export type MaybeTotalInput = number[] | null;"
    )
    assert "done: boolean | null;" in _declaration(generated, "ProgressChunk")
    assert "ProgressInput" not in generated
    assert _declaration(generated, "AnythingInput") == "export type AnythingInput = unknown;"
    assert _declaration(generated, "AnythingChunk") == "export type AnythingChunk = unknown;"
    assert _declaration(generated, "LiarChunk") == "export type LiarChunk = unknown;"
    # The callers: camelCase, streams typed, a value for a unary function, input optional
    # when the function's is; a required input that cannot look like { data } also as itself.
    for member in (
        "getOrder: {\n    (data: GetOrderInput, options?: CallOptions): Promise<GetOrderChunk>;\n"
        "    (input: { data: GetOrderInput }, options?: CallOptions): Promise<GetOrderChunk>;\n"
        "  };",
        "greet: {\n    (data: GreetInput, options?: CallOptions): Chunks<GreetChunk>;\n"
        "    (input: { data: GreetInput }, options?: CallOptions): Chunks<GreetChunk>;\n  };",
        "maybeTotal: (input?: { data?: MaybeTotalInput }, options?: CallOptions)"
        " => Promise<MaybeTotalChunk>;",
        "progress: (options?: CallOptions) => Chunks<ProgressChunk>;",
    ):
        assert member in generated


def test_tsc_strict_passes_correct_calls_and_rejects_each_mistake(generated: str) -> None:
    """One tsc run over a module generated now, a snippet of correct calls and one of
    mistakes: the errors are exactly the lines marked ``// error``."""
    folder = PACKAGE / "build" / "typing"  # inside the package: it imports @grpc-serverfn/client
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "serverfns.gen.ts").write_text(generated)
    for name in ("good_generated.ts", "bad_generated.ts"):
        shutil.copy(SNIPPETS / name, folder / name)
    config = {
        "extends": "../../tsconfig.json",
        "compilerOptions": {"noEmit": True, "rootDir": ".", "types": [], "strict": True},
        "include": ["*.ts"],
    }
    (folder / "tsconfig.json").write_text(json.dumps(config))
    result = subprocess.run(
        [str(PACKAGE / "node_modules" / ".bin" / "tsc"), "-p", str(folder), "--pretty", "false"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    errors = {(Path(m["file"]).name, int(m["line"])) for m in TSC_ERROR.finditer(result.stdout)}
    expected = {
        (name, number)
        for name in ("good_generated.ts", "bad_generated.ts")
        for number, line in enumerate((SNIPPETS / name).read_text().splitlines(), start=1)
        if "// error" in line and not line.lstrip().startswith("//")
    }
    assert len(expected) == 14
    assert errors == expected, result.stdout + result.stderr


def test_check_passes_on_a_fresh_module_and_fails_when_it_drifts(tmp_path: Path) -> None:
    written = tmp_path / "serverfns.gen.ts"
    shutil.copy(COMMITTED, written)
    fresh = run_cli(
        "codegen", "typescript", "--app", APP, "-o", str(written), "--check", cwd=PACKAGE
    )
    assert fresh.returncode == 0, fresh.stderr
    assert f"{written} is up to date" in fresh.stderr

    changed = tmp_path / "changed_app.py"
    changed.write_text(
        "from tests.typed_app import fns\n"
        "@fns.server_fn\n"
        "def added_one(data: int) -> str:\n"
        "    return str(data)\n"
    )
    drift = run_cli(
        "codegen",
        "typescript",
        "--app",
        f"{changed}:fns",
        "-o",
        str(written),
        "--check",
        cwd=PACKAGE,
    )
    assert drift.returncode == 1, drift.stderr
    assert "+export type AddedOneChunk = string;" in drift.stderr
    assert f"{written} is out of date" in drift.stderr

    written.write_text(COMMITTED.read_text().replace("street: string;", "street: number;"))
    hand = run_cli(
        "codegen", "typescript", "--app", APP, "-o", str(written), "--check", cwd=PACKAGE
    )
    assert hand.returncode == 1
    assert "-  street: number;" in hand.stderr
    assert "+  street: string;" in hand.stderr


def test_without_json_schema_to_typescript_it_says_how_to_get_it(tmp_path: Path) -> None:
    result = run_cli(
        "codegen", "typescript", "--app", APP, "-o", str(tmp_path / "x.ts"), cwd=tmp_path
    )
    assert result.returncode == 1
    assert "json-schema-to-typescript not found" in result.stderr
    assert "GRPC_SERVERFN_JSON_SCHEMA_TO_TYPESCRIPT" in result.stderr
    assert not (tmp_path / "x.ts").exists()


def test_the_demo_pages_generated_module_is_current(monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/web/src/serverfns.gen.ts, as CI would check it: from the repository's root,
    json-schema-to-typescript named by the environment."""
    monkeypatch.setenv("GRPC_SERVERFN_JSON_SCHEMA_TO_TYPESCRIPT", str(GENERATOR))
    assert os.environ["GRPC_SERVERFN_JSON_SCHEMA_TO_TYPESCRIPT"] == str(GENERATOR)
    result = run_cli(
        "codegen", "typescript", "--app", "examples/demo.py:fns", "-o", str(DEMO), "--check"
    )
    assert result.returncode == 0, (
        f"{result.stderr}\n{DEMO.relative_to(ROOT)} is stale: run"
        " GRPC_SERVERFN_JSON_SCHEMA_TO_TYPESCRIPT=clients/typescript/node_modules/"
        "json-schema-to-typescript grpc-serverfn codegen typescript --app examples/demo.py:fns"
        f" -o {DEMO.relative_to(ROOT)}"
    )
