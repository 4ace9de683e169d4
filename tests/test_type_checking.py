"""Typed calls are checked before they run: correct usage type-checks under mypy --strict and
pyright, and each kind of mistake is a type error (an unknown function, a missing required
field, a wrong field type, a missing or unexpected input, a chunk field that does not exist),
both for calls by reference to the server's own functions and for a generated module.

The snippets are in tests/typing_snippets/: each line marked ``# error`` must be an error, and
no other line may be one.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mypy import api as mypy_api

from grpc_serverfn import _codegen as codegen
from tests import typed_app

ROOT = Path(__file__).resolve().parent.parent
SNIPPETS = ROOT / "tests" / "typing_snippets"
MYPY_ERROR = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): error: ")


@pytest.fixture(scope="module")
def snippets(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The by-reference snippets where they are (they import tests.typed_app), the generated
    ones in a folder beside a module generated now for tests/typed_app.py."""
    folder = tmp_path_factory.mktemp("typed")
    module = codegen.generate("python", codegen.from_registry(typed_app.fns))
    (folder / "typed_serverfns.py").write_text(module)
    for name in ("good_generated.py", "bad_generated.py"):
        shutil.copy(SNIPPETS / name, folder / name)
    return [
        SNIPPETS / "good_by_reference.py",
        SNIPPETS / "bad_by_reference.py",
        folder / "typed_serverfns.py",
        folder / "good_generated.py",
        folder / "bad_generated.py",
    ]


def expected_errors(files: list[Path]) -> set[tuple[str, int]]:
    return {
        (file.name, number)
        for file in files
        for number, line in enumerate(file.read_text().splitlines(), start=1)
        if "# error" in line and not line.lstrip().startswith("#")
    }


def test_mypy_strict_passes_correct_calls_and_rejects_each_mistake(snippets: list[Path]) -> None:
    stdout, stderr, _ = mypy_api.run(
        [
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--strict",
            "--cache-dir",
            str(ROOT / ".mypy_cache"),  # the cache scripts/check keeps warm
            "--no-error-summary",
            *map(str, snippets),
        ]
    )
    assert not stderr
    found = set()
    for line in stdout.splitlines():
        match = MYPY_ERROR.match(line)
        if match:
            found.add((Path(match["file"]).name, int(match["line"])))
    expected = expected_errors(snippets)
    assert len(expected) == 19
    assert found == expected, stdout


def test_pyright_passes_correct_calls_and_rejects_each_mistake(
    snippets: list[Path], tmp_path: Path
) -> None:
    config = tmp_path / "pyrightconfig.json"
    config.write_text(
        json.dumps({"extraPaths": [str(ROOT), str(snippets[-1].parent)], "pythonVersion": "3.11"})
    )
    pyright = Path(sys.executable).parent / "pyright"
    result = subprocess.run(
        [str(pyright), "--pythonpath", sys.executable, "-p", str(config), "--outputjson"]
        + [str(file) for file in snippets],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = json.loads(result.stdout)
    found = {
        (Path(item["file"]).name, item["range"]["start"]["line"] + 1)
        for item in report["generalDiagnostics"]
        if item["severity"] == "error"
    }
    assert found == expected_errors(snippets), result.stdout
