"""scripts/bench-instructions: a smallest run counts, under valgrind, the instructions of the
hand-written servicer and of grpc-serverfn's server for one workload, and reports them as a
table and JSON (no thresholds: what it measures is a benchmark's, not a test's; this keeps it
from rotting)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_script


def test_a_smallest_run_counts_both_servers_and_reports_them(tmp_path: Path) -> None:
    out = tmp_path / "instructions.json"
    result = run_script(
        "bench-instructions",
        *("--workloads", "short", "--observers", "", "--rounds", "0,1", "--json", str(out)),
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads(out.read_text())["results"]
    assert [(r["workload"], r["server"]) for r in results] == [
        ("short", "servicer"),
        ("short", "plain"),
    ]
    for row in results:
        idle, one_round = row["counts"]
        # Serving a round of 100 calls costs the server instructions beyond starting up.
        assert 0 < idle < one_round, row
        assert row["per_round"] == one_round - idle
    lines = result.stdout.splitlines()
    assert lines[0].startswith("grpc-serverfn server instructions (valgrind callgrind)")
    # Each row against grpc-serverfn's plain server, then against the servicer.
    cells = {line.split()[0]: line.split()[1:] for line in lines if line.startswith("  ")}
    assert cells["servicer"][-1] == "1.000x", lines
    assert cells["plain"][-2] == "1.000x", lines


def test_unknown_workloads_and_bad_rounds_are_refused() -> None:
    for arguments, message in (
        (["--workloads", "nope"], "unknown workload nope"),
        (["--rounds", "3,1"], "needs 0 <= LOW < HIGH"),
    ):
        refused = run_script("bench-instructions", *arguments)
        assert refused.returncode == 2, refused.stderr
        assert message in refused.stderr
