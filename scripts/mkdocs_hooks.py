"""MkDocs hook: the pages' links to files of the repository, outside docs/.

The pages link source files relatively (``[demo](../examples/demo.py)``), so that the links work
on GitHub. MkDocs cannot check those, so this hook does: a link to a file that does not exist
fails the build, and the others point at ``repo_url`` when mkdocs.yml sets one (else they show as
their text).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\[(?P<text>[^\]\[]*)\]\(\.\./(?P<path>[^)#\s]+)(?P<anchor>#[^)\s]*)?\)")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    repo_url = (config.get("repo_url") or "").rstrip("/")
    missing: list[str] = []

    def rewrite(match: re.Match[str]) -> str:
        path = match["path"]
        target = ROOT / path
        if not target.exists():
            missing.append(path)
            return match[0]
        if not repo_url:
            return match["text"]
        kind = "tree" if target.is_dir() else "blob"
        address = f"{repo_url}/{kind}/main/{path.rstrip('/')}{match['anchor'] or ''}"
        return f"[{match['text']}]({address})"

    parts: list[str] = []
    last = 0
    for fence in FENCE.finditer(markdown):  # links inside code blocks are code, not links
        parts.append(LINK.sub(rewrite, markdown[last : fence.start()]))
        parts.append(fence[0])
        last = fence.end()
    parts.append(LINK.sub(rewrite, markdown[last:]))
    if missing:
        raise ValueError(f"{page.file.src_path} links to files that do not exist: {missing}")
    return "".join(parts)
