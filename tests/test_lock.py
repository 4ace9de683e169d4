"""uv.lock, the exact versions scripts/serve and scripts/test install, matches pyproject.toml
(scripts/lock updates it)."""

from __future__ import annotations

import subprocess

from tests.processes import ROOT

UV = ROOT / ".tools" / "uv" / "bin" / "uv"


def test_the_lock_file_matches_pyproject() -> None:
    assert UV.exists(), "run scripts/test: it installs uv into .tools/uv"
    result = subprocess.run(
        [str(UV), "lock", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"run scripts/lock and commit uv.lock:\n{result.stderr}"
