"""The README stays true: its snippets marked "from PATH" are copied from that file."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SNIPPET = re.compile(r"<!-- from (?P<path>\S+) -->\n```\w+\n(?P<code>.*?)```", re.DOTALL)


def test_every_marked_snippet_is_copied_verbatim_from_its_example() -> None:
    readme = (ROOT / "README.md").read_text()
    snippets = list(SNIPPET.finditer(readme))
    assert len(snippets) >= 5
    for snippet in snippets:
        source = (ROOT / snippet["path"]).read_text().splitlines()
        code = textwrap.dedent(snippet["code"]).splitlines()
        # Indentation may differ (a snippet can come from inside a function); text may not.
        assert _contains_run([line.strip() for line in source], [line.strip() for line in code]), (
            f"README snippet from {snippet['path']} is not in that file:\n{snippet['code']}"
        )


def _contains_run(lines: list[str], run: list[str]) -> bool:
    return any(lines[start : start + len(run)] == run for start in range(len(lines)))


def test_the_readme_shows_the_two_setup_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "scripts/serve" in readme
    assert "scripts/test" in readme
