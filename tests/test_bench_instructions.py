"""scripts/bench-instructions: a smallest run counts, under valgrind, the instructions of
grpc-serverfn's server for one workload, and reports them as a table and JSON; the table sets
each row against the plain server and the hand-written servicer (no thresholds: what it
measures is a benchmark's, not a test's; this keeps it from rotting)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.instructions import PLAIN, SERVICER, _table
from tests.conftest import run_script


def test_a_smallest_run_counts_the_server_and_reports_it(tmp_path: Path) -> None:
    # grpc-serverfn's server only: each count starts a server under valgrind (about 13 s);
    # the servicer's row is the same code with the baseline server, which the bench smoke run
    # drives, and the table's servicer column is checked below without valgrind.
    out = tmp_path / "instructions.json"
    result = run_script(
        "bench-instructions",
        *("--workloads", "short", "--observers", "", "--no-servicer"),
        *("--rounds", "0,1", "--json", str(out)),
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads(out.read_text())["results"]
    assert [(r["workload"], r["server"]) for r in results] == [("short", "plain")]
    idle, one_round = results[0]["counts"]
    # Serving a round of 100 calls costs the server instructions beyond starting up.
    assert 0 < idle < one_round, results
    assert results[0]["per_round"] == one_round - idle
    lines = result.stdout.splitlines()
    assert lines[0].startswith("grpc-serverfn server instructions (valgrind callgrind)")
    cells = {line.split()[0]: line.split()[1:] for line in lines if line.startswith("  ")}
    assert cells["plain"][-1] == "1.000x", lines


def test_the_table_gives_each_row_against_the_plain_server_and_the_servicer() -> None:
    results = [
        {"workload": "chunks", "server": SERVICER, "per_round": 496_000_000.0},
        {"workload": "chunks", "server": PLAIN, "per_round": 552_000_000.0},
        {"workload": "short", "server": SERVICER, "per_round": 71_000_000.0},
        {"workload": "short", "server": PLAIN, "per_round": 80_000_000.0},
    ]
    lines = _table(results).splitlines()
    assert lines[0].startswith("chunks: 4 concurrent streams of 2,000 chunks, one per message")
    assert "k instr/chunk" in lines[1]
    # 8,000 chunks a round: 62k and 69k instructions per chunk.
    assert lines[2].split() == ["servicer", "496.0", "62", "-7", "0.899x", "1.000x"]
    assert lines[3].split() == ["plain", "552.0", "69", "+0", "1.000x", "1.113x"]
    short = lines.index("short: 100 sequential calls of 3 chunks per round")
    assert "k instr/call" in lines[short + 1]
    assert lines[short + 3].split() == ["plain", "80.0", "800", "+0", "1.000x", "1.127x"]


def test_unknown_workloads_and_bad_rounds_are_refused() -> None:
    for arguments, message in (
        (["--workloads", "nope"], "unknown workload nope"),
        (["--rounds", "3,1"], "needs 0 <= LOW < HIGH"),
    ):
        refused = run_script("bench-instructions", *arguments)
        assert refused.returncode == 2, refused.stderr
        assert message in refused.stderr
