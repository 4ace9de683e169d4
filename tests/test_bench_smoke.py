"""scripts/bench: a smoke run produces every scenario and every row, with positive figures and
ratios, in the JSON and in the printed table (no speed thresholds: a benchmark is not a timed
test); the chat scenario's streams deliver every token, in order; and the committed generated
code under benchmarks/ matches benchmarks/protos/."""

from __future__ import annotations

import inspect
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from benchmarks.chat import FIGURE_KEYS as CHAT_FIGURES
from benchmarks.chat import MORE_CLIENTS_KEY
from benchmarks.rows import CHAT_ROWS, ROWS, SERVER_LABELS
from benchmarks.run import CHAT_PRESETS
from benchmarks.serve import KINDS
from grpc_serverfn import AsyncClient, Client
from tests.conftest import assert_same_files, regenerate, run_script

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("_proto", "_betterproto")

ALL_ROWS = [row.key for row in ROWS]
CONCURRENT_ROWS = [row.key for row in ROWS if row.concurrent]
# The baseline's probe at the fixed N with twice the client processes comes after it.
CHAT_KEYS = [CHAT_ROWS[0].key, MORE_CLIENTS_KEY, *(row.key for row in CHAT_ROWS[1:])]
SMOKE_CHAT = CHAT_PRESETS["smoke"]
SMOKE_SECONDS = 600  # a smoke run is seconds of work; a busy 2-core machine stretches it
EXPECTED_ROWS = {
    "a_single_stream": ALL_ROWS,
    "b_concurrent_16": CONCURRENT_ROWS,
    "b_concurrent_64": CONCURRENT_ROWS,
    "c_short_calls": ALL_ROWS,
    "d_memory": list(KINDS),
    "e_cpu_per_chunk": ALL_ROWS,
    "f_chat": CHAT_KEYS,
}
EXPECTED_FIGURES = {
    "a_single_stream": {"chunks_per_s"},
    "b_concurrent_16": {"chunks_per_s", "cpu_us_per_chunk"},
    "b_concurrent_64": {"chunks_per_s", "cpu_us_per_chunk"},
    "c_short_calls": {
        "first_chunk_p50_ms",
        "first_chunk_p99_ms",
        "end_p50_ms",
        "end_p99_ms",
    },
    "d_memory": {"peak_rss_mib", "idle_stream_kib"},
    "e_cpu_per_chunk": {"cpu_us_per_chunk"},
    "f_chat": set(CHAT_FIGURES),
}
# A smoke probe is too short to pass or fail meaningfully: "N sustained" is there only when it
# passed, and the probe with more clients has none.
SOMETIMES = {"f_chat": {"chat_streams"}}


def coalesce_supported() -> bool:
    """Whether both clients take ``coalesce=`` (until they do, the coalescing rows may fail)."""
    return all("coalesce" in inspect.signature(kind).parameters for kind in (Client, AsyncClient))


@dataclass(frozen=True)
class SmokeRun:
    stdout: str
    stderr: str
    results: dict[str, Any]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> SmokeRun:
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    result = run_script("bench", "--smoke", "--json", str(out), timeout=SMOKE_SECONDS)
    assert result.returncode == 0, f"scripts/bench --smoke failed:\n{result.stdout}{result.stderr}"
    return SmokeRun(result.stdout, result.stderr, json.loads(out.read_text()))


def test_every_scenario_and_row_is_in_the_json(smoke: SmokeRun) -> None:
    scenarios = smoke.results["scenarios"]
    assert sorted(scenarios) == sorted(EXPECTED_ROWS)
    for key, expected in EXPECTED_ROWS.items():
        assert [row["key"] for row in scenarios[key]["rows"]] == expected, key
        assert {figure["key"] for figure in scenarios[key]["figures"]} == EXPECTED_FIGURES[key]
        assert scenarios[key]["baseline"] == "baseline"


def test_every_row_has_positive_figures_and_ratios(smoke: SmokeRun) -> None:
    lenient = not coalesce_supported()
    problems = []
    for key, scenario in smoke.results["scenarios"].items():
        for row in scenario["rows"]:
            where = f"{key}/{row['key']}"
            if row["error"] is not None:
                # Until the clients take coalesce=, the coalescing rows record why they cannot run.
                if not (
                    lenient
                    and row["key"].endswith("-coalesce")
                    and row["error_kind"] == "coalesce-unsupported"
                ):
                    problems.append(f"{where}: {row['error_kind']}: {row['error']}")
                continue
            optional = SOMETIMES.get(key, set())
            assert set(row["figures"]) - optional == EXPECTED_FIGURES[key] - optional, where
            for name, figure in row["figures"].items():
                numbers = [figure["median"], figure["min"], figure["max"], *figure["runs"]]
                if not all(isinstance(n, int | float) and n > 0 for n in numbers):
                    problems.append(f"{where}/{name}: not all positive: {figure}")
                if not (isinstance(figure["ratio"], int | float) and figure["ratio"] > 0):
                    problems.append(f"{where}/{name}: ratio {figure['ratio']!r}")
                if not figure["min"] <= figure["median"] <= figure["max"]:
                    problems.append(f"{where}/{name}: median outside min-max: {figure}")
            if row["key"] == "baseline":
                assert all(f["ratio"] == pytest.approx(1.0) for f in row["figures"].values())
    assert not problems, "\n".join(problems)


def test_the_runs_and_the_machine_are_described(smoke: SmokeRun) -> None:
    meta = smoke.results["meta"]
    assert meta["mode"] == "smoke"
    assert meta["sizes"]["runs"] == 1
    for scenario in smoke.results["scenarios"].values():
        for row in scenario["rows"]:
            for figure in row["figures"].values():
                assert len(figure["runs"]) == 1
    for package in ("grpcio", "protobuf", "grpclib", "betterproto", "grpc-serverfn"):
        assert meta["packages"][package][0].isdigit(), package
    assert meta["cpu"]
    assert meta["cores"] >= 1
    assert meta["date"]
    assert meta["python"].endswith(platform.python_version())


def test_the_table_names_every_scenario_and_row(smoke: SmokeRun) -> None:
    for scenario in smoke.results["scenarios"].values():
        assert scenario["title"] in smoke.stdout
    labels = [row.label for row in (*ROWS, *CHAT_ROWS)] + list(SERVER_LABELS.values())
    for label in labels:
        assert label in smoke.stdout, label
    for header in ("grpcio", "protobuf", "grpclib", "CPU:"):
        assert header in smoke.stdout.splitlines()[1] + smoke.stdout.splitlines()[2], header
    assert "Traceback" not in smoke.stderr


def test_generated_bench_code_has_not_drifted_from_the_proto(tmp_path: Path) -> None:
    regenerate("gen-bench-proto", tmp_path)
    for name in GENERATED:
        assert_same_files(tmp_path / name, ROOT / "benchmarks" / name, "gen-bench-proto")


def test_only_and_rows_pick_scenarios_and_rows_and_keep_the_baseline(tmp_path: Path) -> None:
    out = tmp_path / "subset.json"
    result = run_script(
        "bench",
        "--smoke",
        "--only",
        "stream,memory",
        "--rows",
        "serverfn-observed",
        "--json",
        str(out),
        timeout=SMOKE_SECONDS,
    )
    assert result.returncode == 0, result.stderr
    results = json.loads(out.read_text())
    assert list(results["scenarios"]) == ["a_single_stream", "d_memory", "e_cpu_per_chunk"]
    assert results["meta"]["scenarios"] == ["stream", "memory"]
    for scenario in results["scenarios"].values():
        assert [row["key"] for row in scenario["rows"]] == ["baseline", "serverfn-observed"]
    for option, error in (("--rows", "unknown row nope"), ("--only", "unknown scenario nope")):
        refused = run_script("bench", option, "nope", timeout=60)
        assert refused.returncode == 2
        assert error in refused.stderr


def test_observed_web_and_stub_rows_are_compared_round_by_round(
    smoke: SmokeRun,
) -> None:
    pairs = {row.key: row.versus for row in ROWS if row.versus is not None}
    assert pairs == {
        "serverfn-observed": "serverfn-async",
        "serverfn-observed-coalesce": "serverfn-async-coalesce",
        # The web port (Connect over HTTP/2) beside the gRPC port of the same server.
        "web-connect": "serverfn-async",
        "web-connect-coalesce": "serverfn-async-coalesce",
        # grpc-serverfn seen from outside, through the plain stub, beside the servicer.
        "serverfn-stub": "baseline",
    }
    scenarios = smoke.results["scenarios"]
    for key in ("a_single_stream", "b_concurrent_16", "c_short_calls", "e_cpu_per_chunk"):
        rows = {row["key"]: row for row in scenarios[key]["rows"]}
        for observed, plain in pairs.items():
            for name, figure in rows[observed]["figures"].items():
                versus = figure["versus"]
                assert versus["row"] == plain
                # One run each in a smoke run: the paired ratio is the ratio of the two runs.
                expected = figure["runs"][0] / rows[plain]["figures"][name]["runs"][0]
                assert versus["ratios"] == [pytest.approx(expected)]
            line = next(
                text
                for text in smoke.stdout.splitlines()
                if text.strip().startswith(key) and f"{observed} / {plain}" in text
            )
            assert line.rstrip().endswith("x"), line
    assert "Paired: a row / the row it is compared with" in smoke.stdout
    assert all(
        "versus" not in f for f in scenarios["a_single_stream"]["rows"][0]["figures"].values()
    )


def test_every_chat_stream_gets_every_token_in_order(smoke: SmokeRun) -> None:
    chat = smoke.results["scenarios"]["f_chat"]
    tokens = SMOKE_CHAT.tokens
    assert tokens == round(SMOKE_CHAT.seconds * 40)  # a token every 25 ms
    for row in chat["rows"]:
        where = f"f_chat/{row['key']}"
        assert row["error"] is None, f"{where}: {row['error']}"
        fixed = row["details"]["probes"][0]
        clients = 2 * SMOKE_CHAT.clients if row["key"] == MORE_CLIENTS_KEY else SMOKE_CHAT.clients
        assert fixed["streams"] == SMOKE_CHAT.fixed, where
        assert fixed["client_processes"] == clients, where
        assert fixed["tokens_expected"] == SMOKE_CHAT.fixed * tokens, where
        assert fixed["tokens_received"] == fixed["tokens_expected"], where
        assert fixed["tokens_lost"] == 0, where
        assert fixed["streams_complete"] == SMOKE_CHAT.fixed, where
        assert fixed["errors"] == [], where
        assert fixed["stopped"] is None, where
        assert fixed["server_cpu_us_per_token"] > 0, where
        assert fixed["client_cpu_us_per_token"] > 0, where
        # N sustained is the fixed N when that probe passed (no search in a smoke run); the
        # row with more clients repeats the baseline's probe only, and has no N of its own.
        if row["key"] == MORE_CLIENTS_KEY:
            assert "chat_streams" not in row["figures"], where
        elif fixed["passed"]:
            assert row["figures"]["chat_streams"]["median"] == SMOKE_CHAT.fixed, where
        else:
            assert "chat_streams" not in row["figures"], where
    workers = next(row for row in chat["rows"] if row["key"] == "serverfn-workers")
    assert len(workers["details"]["probes"][0]["worker_cpu_seconds"]) == 2
    assert smoke.results["meta"]["chat"]["fixed"] == SMOKE_CHAT.fixed
    assert any(line.startswith("Clients at N=") for line in chat["notes"])
    assert "Clients at N=" in smoke.stdout
