"""The documentation site builds with ``mkdocs build --strict``: a broken link, anchor, file or
API reference (mkdocstrings) fails the build, and with it this test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "index.html").exists()
    assert (tmp_path / "site" / "reference" / "client" / "index.html").exists()


def test_every_page_is_in_the_nav() -> None:
    """mkdocs builds a page left out of the nav without complaint; this test complains."""
    mkdocs_yml = (ROOT / "mkdocs.yml").read_text()
    for page in sorted((ROOT / "docs").rglob("*.md")):
        name = page.relative_to(ROOT / "docs").as_posix()
        assert name in mkdocs_yml, f"docs/{name} is not in mkdocs.yml's nav"
