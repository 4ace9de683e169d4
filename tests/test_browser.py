"""The demo page (examples/web) in a real headless Chromium against a real server.

``grpc-serverfn serve examples/demo.py:fns --web-port 0 --web-root examples/web/dist`` serves
the page and its functions; examples/web/tests/browser.test.mjs drives Debian's chromium with
playwright-core over Connect JSON, Connect binary and gRPC-Web: the progress bar, the chat
reply, a field violation, leaving a call, a reload and a dropped network in the middle of a
resumable reply, and pages on other origins. Screenshots land in ``tests/artifacts/browser``.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.processes import ROOT, server_env, serving

WEB = ROOT / "examples" / "web"
ARTIFACTS = ROOT / "tests" / "artifacts" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module", autouse=True)
def _installed() -> None:
    assert (WEB / "node_modules").is_dir(), "run scripts/test: it installs examples/web's packages"
    assert Path(CHROMIUM).exists(), "run scripts/test: it installs Debian's chromium"


def npm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["npm", "--prefix", str(WEB), "run", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_page_type_checks_with_tsc_strict() -> None:
    result = npm("typecheck")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def built_page() -> Path:
    result = npm("build")
    assert result.returncode == 0, result.stdout + result.stderr
    return WEB / "dist"


@contextlib.contextmanager
def static_site(directory: Path) -> Iterator[str]:
    """The page on an origin of its own (another port), as a site elsewhere would serve it."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{httpd.server_address[1]}/"
        finally:
            httpd.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def run_node(
    command: list[str], *, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run the browser tests; when they hang, fail with what they printed so far."""
    try:
        return subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, timeout=240, check=False
        )
    except subprocess.TimeoutExpired as expired:
        output = (
            expired.stdout if isinstance(expired.stdout, str) else (expired.stdout or b"").decode()
        )
        pytest.fail(f"the browser tests did not finish in 240 s:\n{(output or '')[-8000:]}")


def test_the_demo_page_in_chromium(built_page: Path, demo: ModuleType) -> None:
    message = " ".join(f"word{index}" for index in range(40))
    # Long enough (about 9 s of tokens) that a reload or a cut surely lands in the middle.
    long_message = " ".join(f"word{index}" for index in range(200))
    with (
        static_site(built_page) as allowed,
        static_site(built_page) as denied,
        serving(
            "examples/demo.py:fns",
            "--port", "0",
            "--web-port", "0",
            "--web-root", str(built_page),
            "--cors-origin", allowed.rstrip("/"),
            # Slow enough that a page can leave, reload or drop in the middle of a call.
            env=server_env(DEMO_TOKEN_SECONDS="0.04", DEMO_RECORD_SECONDS="0.01"),
        ) as server,
    ):  # fmt: skip
        web_url = server.wait_web_serving()
        if ARTIFACTS.exists():
            shutil.rmtree(ARTIFACTS)
        result = run_node(
            ["node", "--test", "--test-reporter=spec", str(WEB / "tests" / "browser.test.mjs")],
            cwd=WEB,
            env={
                **os.environ,
                "APP_URL": web_url + "/",
                "ALLOWED_URL": allowed,
                "DENIED_URL": denied,
                "CHAT_MESSAGE": message,
                "EXPECTED_REPLY": demo.local_reply(message),
                "LONG_MESSAGE": long_message,
                "LONG_REPLY": demo.local_reply(long_message),
                "ARTIFACTS": str(ARTIFACTS),
                "CHROMIUM": CHROMIUM,
            },
        )
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        # Leaving the CSV job (closing its panel over Connect, Cancel over gRPC-Web) closed the
        # function's generator on the server: its finally ran, once for each.
        stopped = re.findall(r"process_large_file stopped after \d+ of (\d+) records", server.log)
        assert sorted(stopped) == ["4000", "5000"], server.log[-4000:]
        # The reply cut by the dropped network was picked up again, not started over.
        assert re.search(r"stream_chat OK .* protocol=connect resumed=true", server.log)
        assert "Traceback" not in server.log
    assert sorted(path.name for path in ARTIFACTS.glob("*.png")) == [
        "chat-after-reload.png",
        "invalid-connect-binary.png",
        "invalid-connect.png",
        "invalid-grpc-web.png",
        "progress-connect-binary.png",
        "progress-connect.png",
        "progress-grpc-web.png",
    ]
