"""``scripts/bench-instructions``: what a call and observability cost the server, in instructions.

Wall-clock rates on a shared machine move by 15-30% from one run to the next, far more than
the few percent that metrics, traces and call logs cost; an instruction count does not. This
runs each server under valgrind's callgrind: the hand-written grpc.aio servicer (the row the
ratios are taken against), grpc-serverfn's plain, and grpc-serverfn's with each set of
observers; it drives a fixed workload against it, and counts the instructions the server process
executed (all its threads). Each count is taken twice, with ``--rounds LOW,HIGH`` rounds of the
workload, and the difference divided by ``HIGH - LOW``, so starting and stopping the server
(imports, grpc's start-up) cancel out.

Workloads:
    streams   16 concurrent streams of 1,500 chunks, coalescing on as the clients default: the
              throughput figure where a per-call cost weighs most (scripts/bench's (b))
    short     100 sequential calls of 3 chunks: per-call cost at its plainest (scripts/bench's (c))
    chunks    4 concurrent streams of 2,000 chunks, one chunk per message, every server called
              through its plain grpc.aio stub: the per-chunk cost as an outside caller sees it

Needs valgrind (Debian's package). About a minute per workload and observer set.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .drivers import AsyncDriver, GrpcAioDriver, ServerfnAsyncDriver, ServerfnStubDriver
from .run import machine_info
from .scenarios import SHORT_CALL_CHUNKS, progress
from .serve import OBSERVERS_ENV, WEB_ENV
from .servers import ROOT, ServerProcess
from .workload import CHUNK_BYTES

__all__ = ["WORKLOADS", "count_instructions", "main"]

DEFAULT_JSON = ROOT / "benchmarks" / "results" / "instructions.json"
STREAMS, STREAM_CHUNKS = 16, 1_500
SHORT_CALLS = 100
MESSAGE_STREAMS, MESSAGE_CHUNKS = 4, 2_000
WORKLOADS = {
    "streams": (
        STREAMS,
        f"{STREAMS} concurrent streams of {STREAM_CHUNKS:,} chunks (coalescing on)",
    ),
    "short": (SHORT_CALLS, f"{SHORT_CALLS} sequential calls of {SHORT_CALL_CHUNKS} chunks"),
    "chunks": (
        MESSAGE_STREAMS * MESSAGE_CHUNKS,
        f"{MESSAGE_STREAMS} concurrent streams of {MESSAGE_CHUNKS:,} chunks, one per message,"
        " through the plain stubs; per chunk",
    ),
}
"""Each workload's units per round (calls, or chunks for ``chunks``) and description."""

_TOTAL = re.compile(rb"^(?:summary|totals): (\d+)", re.MULTILINE)


async def _drive(address: str, workload: str, rounds: int, *, servicer: bool = False) -> None:
    driver: AsyncDriver
    if servicer:
        driver = GrpcAioDriver(address)
    elif workload == "chunks":
        driver = ServerfnStubDriver(address, "stream")
    else:
        driver = ServerfnAsyncDriver(address, "stream", coalesce=True)
    try:
        for _ in range(rounds):
            if workload in ("streams", "chunks"):
                streams, chunks = (
                    (STREAMS, STREAM_CHUNKS)
                    if workload == "streams"
                    else (MESSAGE_STREAMS, MESSAGE_CHUNKS)
                )
                counts = await asyncio.gather(
                    *(driver.drain(chunks, CHUNK_BYTES) for _ in range(streams))
                )
                assert counts == [chunks] * streams, counts
            else:
                for _ in range(SHORT_CALLS):
                    count = (await driver.timed_call(SHORT_CALL_CHUNKS, CHUNK_BYTES))[2]
                    assert count == SHORT_CALL_CHUNKS, count
    finally:
        await driver.aclose()


SERVICER = "servicer"
"""The row of the hand-written grpc.aio servicer (benchmarks.baseline), driven by its stub."""
PLAIN = "plain"
"""The row of grpc-serverfn's server without observers."""


def count_instructions(server: str, workload: str, rounds: int) -> int:
    """Instructions the server executed, start to exit, serving ``rounds`` of ``workload``;
    ``server`` is SERVICER, PLAIN or a set of observers (``metrics,traces``) to serve with."""
    env = {**os.environ, WEB_ENV: "0"}
    kind = {SERVICER: "baseline", PLAIN: "serverfn"}.get(server, "serverfn-observed")
    if kind == "serverfn-observed":
        env[OBSERVERS_ENV] = server
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as folder:
        out = Path(folder) / "callgrind.out"
        wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        with ServerProcess(
            kind, wrapper=wrapper, env=env, start_seconds=300, stop_seconds=300
        ) as process:
            asyncio.run(_drive(process.address, workload, rounds, servicer=server == SERVICER))
        found = _TOTAL.search(out.read_bytes()) if out.exists() else None
        if found is None:
            raise RuntimeError(f"callgrind wrote no total for the {kind} server")
        return int(found.group(1))


def _rounds(text: str) -> tuple[int, int]:
    try:
        low, high = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH, not {text!r}") from None
    if not 0 <= low < high:
        raise argparse.ArgumentTypeError(f"needs 0 <= LOW < HIGH, not {text}")
    return low, high


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/bench-instructions",
        description="Instructions the benchmark server executes per round of a workload,"
        " plain and with observers (valgrind callgrind).",
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help=f"comma-separated, of {', '.join(WORKLOADS)} (default: all)",
    )
    parser.add_argument(
        "--observers",
        action="append",
        metavar="SET",
        help="an observer set to measure, e.g. metrics,traces,logs or traces; repeatable"
        " (default: metrics,traces,logs, then each alone; --observers '' for none)",
    )
    parser.add_argument(
        "--no-servicer",
        dest="servicer",
        action="store_false",
        help="leave out the hand-written grpc.aio servicer (the row the ratios are taken against)",
    )
    parser.add_argument(
        "--rounds",
        type=_rounds,
        default=(1, 3),
        metavar="LOW,HIGH",
        help="rounds in the two counts whose difference is taken (default 1,3)",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH")
    return parser


def _table(results: list[dict[str, Any]]) -> str:
    lines = []
    for workload in dict.fromkeys(result["workload"] for result in results):
        calls, description = WORKLOADS[workload]
        lines.append(f"{workload}: {description} per round")
        rows = [r for r in results if r["workload"] == workload]
        plain = next(r for r in rows if r["server"] == PLAIN)["per_round"]
        servicer = next((r["per_round"] for r in rows if r["server"] == SERVICER), None)
        unit = "chunk" if workload == "chunks" else "call"
        header: tuple[str, ...] = ("server", "M instr/round", f"k instr/{unit}", f"+k instr/{unit}")
        header += ("/ plain", "/ servicer") if servicer else ("/ plain",)
        cells = [header]
        for row in rows:
            per_round = row["per_round"]
            line: tuple[str, ...] = (
                str(row["server"]),
                f"{per_round / 1e6:,.1f}",
                f"{per_round / calls / 1e3:,.0f}",
                f"{(per_round - plain) / calls / 1e3:+,.0f}",
                f"{per_round / plain:.3f}x",
            )
            cells.append(line + ((f"{per_round / servicer:.3f}x",) if servicer else ()))
        widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
        for line in cells:
            text = [line[0].ljust(widths[0])]
            text += [cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)]
            lines.append("  " + "  ".join(text))
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    args = _parser().parse_args(argv)
    workloads = [name.strip() for name in args.workloads.split(",") if name.strip()]
    unknown = sorted(set(workloads) - set(WORKLOADS))
    if unknown:
        _parser().error(f"unknown workload {', '.join(unknown)}")
    low, high = args.rounds
    sets = ["metrics,traces,logs", "metrics", "traces", "logs"]
    if args.observers is not None:
        sets = [observers for observers in args.observers if observers]
    started = time.monotonic()
    results = []
    for workload in workloads:
        servers = [SERVICER] if args.servicer else []
        # Observers act per call, not per chunk: the chunks workload counts the two servers.
        observed = sets if workload != "chunks" else []
        for server in [*servers, PLAIN, *observed]:
            progress(f"{workload}: {server} server, {low} and {high} rounds")
            counts = [count_instructions(server, workload, rounds) for rounds in (low, high)]
            per_round = (counts[1] - counts[0]) / (high - low)
            results.append(
                {
                    "workload": workload,
                    "server": server,
                    "counts": counts,
                    "per_round": per_round,
                }
            )
    meta = machine_info() | {"rounds": [low, high], "wall_seconds": time.monotonic() - started}
    sys.stdout.write(f"grpc-serverfn server instructions (valgrind callgrind), {meta['date']}\n\n")
    sys.stdout.write(_table(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    progress(f"wrote {args.json.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
