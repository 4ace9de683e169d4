"""The committed betterproto stubs (grpc_serverfn/stubs) match what scripts/gen-stubs makes from
protos/ today; and the core package neither needs nor imports them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import assert_same_files, regenerate

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "grpc_serverfn" / "stubs"


def test_generated_stubs_have_not_drifted_from_the_proto(tmp_path: Path) -> None:
    regenerate("gen-stubs", tmp_path / "stubs")
    assert_same_files(tmp_path / "stubs", GENERATED, "gen-stubs")


def test_the_core_package_imports_without_betterproto_or_grpclib() -> None:
    """Importing grpc_serverfn (and its clients, server and CLI) never pulls in the stubs."""
    code = "\n".join(
        [
            "import sys",
            "sys.modules['betterproto'] = None  # as if not installed: importing it fails",
            "sys.modules['grpclib'] = None",
            "import grpc_serverfn, grpc_serverfn.cli, grpc_serverfn.client, grpc_serverfn.server",
            "import grpc_serverfn.testing",
            "loaded = [name for name in sys.modules if name.startswith('grpc_serverfn.stubs')]",
            "assert not loaded, loaded",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_nothing_outside_stubs_imports_betterproto() -> None:
    offenders = [
        path.relative_to(ROOT).as_posix()
        for path in sorted((ROOT / "grpc_serverfn").rglob("*.py"))
        if GENERATED not in path.parents
        and any(name in path.read_text() for name in ("import betterproto", "from betterproto"))
    ]
    assert not offenders, f"only grpc_serverfn/stubs may import betterproto: {offenders}"
