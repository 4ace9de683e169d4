"""``grpc-serverfn serve`` in a subprocess, for tests that need a real server process (its
log, its signals, its memory, its pid)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPTLY = 30.0
SERVING = re.compile(r"grpc-serverfn serving (\d+) function\(s\) on (127\.0\.0\.1:(\d+))")
WEB_SERVING = re.compile(r"serving them to browsers on (https?://127\.0\.0\.1:\d+)")


def _script() -> str:
    beside_python = Path(sys.executable).parent / "grpc-serverfn"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("grpc-serverfn")
    assert found is not None, "the grpc-serverfn console script is not installed"
    return found


SCRIPT = _script()


def server_env(**overrides: str) -> dict[str, str]:
    """This environment for a server process: no OpenAI key, short demo delays, the repository
    importable (``tests.app:fns``), no SERVERFN_HOST/PORT from the caller's shell."""
    env = {key: value for key, value in os.environ.items() if key != "OPENAI_API_KEY"}
    pythonpath = os.environ.get("PYTHONPATH")
    env.update(
        {
            "DEMO_STEP_SECONDS": "0.01",
            "DEMO_TOKEN_SECONDS": "0.001",
            "PYTHONPATH": f"{ROOT}{os.pathsep}{pythonpath}" if pythonpath else str(ROOT),
            **overrides,
        }
    )
    env.pop("SERVERFN_HOST", None)
    env.pop("SERVERFN_PORT", None)
    return env


def run_cli(
    *args: str, input: str | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """Run the console script to completion (``server_env``), capturing stdout and stderr."""
    return subprocess.run(
        [SCRIPT, *args],
        cwd=cwd,
        env=server_env(),
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=PROMPTLY,
        check=False,
    )


class ServerProcess:
    """``grpc-serverfn serve`` in a subprocess, its stderr collected line by line."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [SCRIPT, "serve", *args],
            cwd=ROOT,
            env=env if env is not None else server_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.address = ""  # host:port, once wait_serving has read it from the log
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    @property
    def log(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def wait_for_line(self, pattern: re.Pattern[str] | str, timeout: float = PROMPTLY) -> str:
        """The first stderr line matching ``pattern``, waiting for it up to ``timeout``."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if regex.search(line):
                        return line
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    raise AssertionError(
                        f"no stderr line matched {regex.pattern!r}"
                        f" (exit code {self.process.poll()}); stderr so far:\n{self.log}"
                    )
                self._changed.wait(remaining)

    def wait_serving(self) -> str:
        """Wait for the "serving" log line; the address it names (``--port 0`` resolved)."""
        match = SERVING.search(self.wait_for_line(SERVING))
        assert match is not None
        self.address = match.group(2)
        return self.address

    def wait_web_serving(self) -> str:
        """Wait for the web port's log line; the URL it names (``--web-port 0`` resolved)."""
        match = WEB_SERVING.search(self.wait_for_line(WEB_SERVING))
        assert match is not None
        return match.group(1)

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self._finish()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(PROMPTLY)
        self._finish()

    def _finish(self) -> None:
        self._reader.join(PROMPTLY)
        if self.process.stderr is not None:
            self.process.stderr.close()


@contextlib.contextmanager
def serving(*args: str, env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    server = ServerProcess(*args, env=env)
    try:
        yield server
    finally:
        server.kill()
