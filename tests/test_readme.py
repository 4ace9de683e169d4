"""The README and the documentation pages stay true: their snippets marked "from PATH" are copied
from that file."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SNIPPET = re.compile(r"<!-- from (?P<path>\S+) -->\n```\w+\n(?P<code>.*?)```", re.DOTALL)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def docs_text() -> str:
    """The README and every page of the documentation site, one after another."""
    return "\n".join(page.read_text() for page in PAGES)


def test_there_are_marked_snippets() -> None:
    assert len(SNIPPET.findall(docs_text())) >= 5


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_marked_snippet_is_copied_verbatim_from_its_example(page: Path) -> None:
    for snippet in SNIPPET.finditer(page.read_text()):
        source = (ROOT / snippet["path"]).read_text().splitlines()
        code = textwrap.dedent(snippet["code"]).splitlines()
        # Indentation may differ (a snippet can come from inside a function); text may not.
        assert _contains_run([line.strip() for line in source], [line.strip() for line in code]), (
            f"{page.name} snippet from {snippet['path']} is not in that file:\n{snippet['code']}"
        )


def _contains_run(lines: list[str], run: list[str]) -> bool:
    return any(lines[start : start + len(run)] == run for start in range(len(lines)))


def test_the_readme_shows_the_two_setup_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "scripts/serve" in readme
    assert "scripts/test" in readme


def test_the_readme_is_the_short_front_page() -> None:
    """The manual lives in docs/ (the site); the README stays a front page (issue 16)."""
    assert len((ROOT / "README.md").read_bytes()) < 12_000


def test_the_readmes_links_name_files_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\((?!https?:|#)([^)#\s]+)", readme)
    assert "docs/index.md" in targets
    for target in targets:
        assert (ROOT / target).exists(), f"README.md links to {target}, which does not exist"
