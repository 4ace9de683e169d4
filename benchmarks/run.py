"""``scripts/bench``: grpc-serverfn side by side with a hand-written grpc.aio service and grpclib.

Each server runs in its own process on 127.0.0.1 (an ephemeral port); this process is the
client and runs the scenarios one after the other, then prints a table on stdout and writes
the JSON (``--json``, default benchmarks/results/latest.json). Progress goes to stderr.

    scripts/bench               the full run (about a quarter of an hour)
    scripts/bench --quick       a few minutes
    scripts/bench --smoke       seconds of work, every row present (for CI)
    scripts/bench --only chat   only the chat capacity scenario, (f)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from . import chat, scenarios
from .chat import ChatPlan
from .report import Section, render, to_json
from .rows import BASELINE, CHAT_ROWS, ROWS
from .scenarios import Sizes, progress
from .serve import KINDS
from .servers import ROOT, running

__all__ = ["CHAT_PRESETS", "PRESETS", "SCENARIOS", "main"]

SCENARIOS = {
    "stream": "(a) one stream, and (e) the server's CPU per chunk in it",
    "concurrent": "(b) concurrent streams",
    "short": "(c) short calls",
    "memory": "(d) memory: peak RSS (after what else ran) and per idle stream",
    "chat": "(f) chat capacity: the most chat streams a server sustains",
}
"""What ``--only`` picks from."""

DEFAULT_JSON = ROOT / "benchmarks" / "results" / "latest.json"

PRESETS: dict[str, Sizes] = {
    "full": Sizes(
        chunks=30_000,
        concurrent_chunks=600,
        concurrency=(16, 64),
        calls=1_000,
        idle_streams=1_000,
        runs=3,
        min_run_seconds=1.0,
    ),
    "quick": Sizes(
        chunks=8_000,
        concurrent_chunks=150,
        concurrency=(16, 64),
        calls=150,
        idle_streams=200,
        runs=3,
        min_run_seconds=0.3,
    ),
    "smoke": Sizes(
        chunks=2_000,
        concurrent_chunks=20,
        concurrency=(16, 64),
        calls=20,
        idle_streams=100,
        runs=1,
    ),
}
"""The sizes of each mode; the size flags override them one by one."""

CHAT_PRESETS: dict[str, ChatPlan] = {
    "full": ChatPlan(
        seconds=20.0, ramp=2.0, fixed=150, probes=3, resolution=0.12, clients=2, slack=10.0
    ),
    "quick": ChatPlan(
        seconds=5.0, ramp=1.0, fixed=150, probes=2, resolution=0.25, clients=2, slack=5.0
    ),
    "smoke": ChatPlan(
        seconds=2.0, ramp=0.2, fixed=10, probes=0, resolution=0.25, clients=2, slack=5.0
    ),
}
"""How each mode runs (f); ``--chat-*`` override it."""


def _positive(text: str) -> int:
    value = int(text.replace("_", "").replace(",", ""))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _names(text: str, known: Sequence[str], what: str) -> tuple[str, ...]:
    """The comma-separated names in ``text``, each one of ``known`` (a ``what``)."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = sorted(set(names) - set(known))
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or '(none given)'}; the {what}s are"
            f" {', '.join(known)}"
        )
    return names


def _scenario_names(text: str) -> tuple[str, ...]:
    return _names(text, tuple(SCENARIOS), "scenario")


def _concurrency(text: str) -> tuple[int, ...]:
    return tuple(_positive(part) for part in text.split(",") if part.strip())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Benchmark grpc-serverfn against a hand-written grpc.aio service and"
        " grpclib, each server in its own process on 127.0.0.1.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        action="store_const",
        dest="mode",
        const="quick",
        help="sizes that finish in under a minute",
    )
    mode.add_argument(
        "--smoke",
        action="store_const",
        dest="mode",
        const="smoke",
        help="a second or two of work, every row present (for CI)",
    )
    parser.set_defaults(mode="full")
    full = PRESETS["full"]
    parser.add_argument(
        "--chunks",
        type=_positive,
        metavar="N",
        help=f"(a) chunks in the one stream (full: {full.chunks:,})",
    )
    parser.add_argument(
        "--concurrent-chunks",
        type=_positive,
        metavar="N",
        help=f"(b) chunks in each concurrent stream (full: {full.concurrent_chunks:,})",
    )
    parser.add_argument(
        "--concurrency",
        type=_concurrency,
        metavar="C,C",
        help="(b) numbers of concurrent streams, comma-separated (default 16,64)",
    )
    parser.add_argument(
        "--calls",
        type=_positive,
        metavar="N",
        help=f"(c) sequential short calls per run (full: {full.calls:,})",
    )
    parser.add_argument(
        "--idle-streams",
        type=_positive,
        metavar="N",
        help=f"(d) idle streams held open (full: {full.idle_streams:,})",
    )
    parser.add_argument(
        "--runs",
        type=_positive,
        metavar="N",
        help=f"runs per figure, the median reported (full: {full.runs})",
    )
    parser.add_argument(
        "--min-run-seconds",
        type=_seconds,
        metavar="S",
        help="(a), (b): each run repeats its calls until S seconds have passed"
        f" (full: {full.min_run_seconds:g}; 0: one call or one set of streams)",
    )
    chat_full = CHAT_PRESETS["full"]
    parser.add_argument(
        "--chat-seconds",
        type=_positive_seconds,
        metavar="S",
        help=f"(f) each chat stream's length (full: {chat_full.seconds:g}; quick:"
        f" {CHAT_PRESETS['quick'].seconds:g}, with a coarser search)",
    )
    parser.add_argument(
        "--chat-streams",
        type=_positive,
        metavar="N",
        help="(f) the N of chat streams every row is probed at first, where its p99 and CPU per"
        f" token are reported (full: {chat_full.fixed})",
    )
    parser.add_argument(
        "--chat-probes",
        type=_count,
        metavar="K",
        help="(f) probes per row after the first in the search for its largest N (full:"
        f" {chat_full.probes}; 0: no search)",
    )
    parser.add_argument(
        "--chat-clients",
        type=_positive,
        metavar="P",
        help=f"(f) client processes driving the streams (full: {chat_full.clients})",
    )
    parser.add_argument(
        "--only",
        type=_scenario_names,
        metavar="NAME,NAME",
        help="only these scenarios: "
        + "; ".join(f"{name} {what}" for name, what in SCENARIOS.items()),
    )
    parser.add_argument(
        "--rows",
        type=_row_keys,
        metavar="KEY,KEY",
        help="only these rows (and the baseline), e.g. serverfn-async,serverfn-observed;"
        f" keys: {', '.join(_ROW_KEYS)}",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        metavar="PATH",
        help="where to write the results as JSON (default benchmarks/results/latest.json)",
    )
    return parser


def _sizes(args: argparse.Namespace) -> Sizes:
    preset = PRESETS[args.mode]
    return Sizes(
        chunks=args.chunks or preset.chunks,
        concurrent_chunks=args.concurrent_chunks or preset.concurrent_chunks,
        concurrency=args.concurrency or preset.concurrency,
        calls=args.calls or preset.calls,
        idle_streams=args.idle_streams or preset.idle_streams,
        runs=args.runs or preset.runs,
        min_run_seconds=(
            preset.min_run_seconds if args.min_run_seconds is None else args.min_run_seconds
        ),
    )


def _chat_plan(args: argparse.Namespace) -> ChatPlan:
    preset = CHAT_PRESETS[args.mode]
    return dataclasses.replace(
        preset,
        seconds=args.chat_seconds or preset.seconds,
        fixed=args.chat_streams or preset.fixed,
        probes=preset.probes if args.chat_probes is None else args.chat_probes,
        clients=args.chat_clients or preset.clients,
    )


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """Where and with what the benchmark ran."""
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "packages": {
            name: _version(name)
            for name in ("grpc-serverfn", "grpcio", "protobuf", "grpclib", "betterproto", "orjson")
        },
    }


def _header(meta: dict[str, Any]) -> list[str]:
    packages = meta["packages"]
    sizes = meta["sizes"]
    plan = meta["chat"]
    versions = ", ".join(f"{name} {version}" for name, version in packages.items())
    return [
        f"grpc-serverfn benchmark, {meta['mode']} run: {meta['date']},"
        f" {meta['wall_seconds']:.0f} s",
        f"{meta['python']}; {versions}",
        f"CPU: {meta['cpu']}, {meta['cores']} cores ({meta['cores_usable']} usable);"
        f" {meta['platform']}",
        f"sizes: --chunks {sizes['chunks']:,} --concurrent-chunks {sizes['concurrent_chunks']:,}"
        f" --concurrency {','.join(map(str, sizes['concurrency']))} --calls {sizes['calls']:,}"
        f" --idle-streams {sizes['idle_streams']:,} --runs {sizes['runs']}"
        f" --min-run-seconds {sizes['min_run_seconds']:g} --chat-seconds {plan['seconds']:g}"
        f" --chat-streams {plan['fixed']} --chat-probes {plan['probes']}"
        f" --chat-clients {plan['clients']}; scenarios: {', '.join(meta['scenarios'])}",
        f"Chunks of ~{sizes['chunk_bytes']} B of JSON; every client turns each into a dict."
        " Each server in its own process on 127.0.0.1, one client process ((f): several).",
        "Runs in rounds (one run of every row per round, order rotated)."
        " Figures: median of the runs, min-max of the runs, / base = row / baseline of this run"
        " (rates: >1 is better; times, memory, CPU: <1 is better).",
        f"Server CPU: {meta['server_cpu_clock']}.",
    ]


_ROW_KEYS = tuple(dict.fromkeys(spec.key for spec in (*ROWS, *CHAT_ROWS)))


def _row_keys(text: str) -> tuple[str, ...]:
    return _names(text, _ROW_KEYS, "row")


def run(
    sizes: Sizes,
    meta: dict[str, Any],
    keys: Sequence[str] | None = None,
    *,
    plan: ChatPlan = CHAT_PRESETS["smoke"],
    only: Sequence[str] = tuple(SCENARIOS),
) -> list[Section]:
    """Run the scenarios named by ``only`` for the rows named by ``keys`` (all by default; the
    baseline always), noting in ``meta`` how server CPU was read; servers are always stopped,
    whatever happens."""

    def chosen(specs: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(s for s in specs if keys is None or s.key in keys or s.key == BASELINE)

    rows = chosen(ROWS)
    kinds = tuple(kind for kind in KINDS if any(spec.server == kind for spec in rows))
    sections: list[Section] = []
    clocks: set[str] = set()
    if {"stream", "concurrent", "short", "memory"} & set(only):
        with running(*kinds) as servers:
            clocks |= {s.cpu_source for s in servers.values()}
            if "stream" in only:
                single, cpu = scenarios.single_stream(rows, servers, sizes)
                sections.append(single)
            if "concurrent" in only:
                sections += scenarios.concurrent_streams(rows, servers, sizes)
            if "short" in only:
                sections.append(scenarios.short_calls(rows, servers, sizes))
            peaks, peak_errors = scenarios.peak_memory(servers)
        if "memory" in only:
            sections.append(scenarios.idle_streams(kinds, sizes, peaks, peak_errors))
        if "stream" in only:
            sections.append(cpu)
    if "chat" in only:
        section, clock = chat.chat(chosen(CHAT_ROWS), plan, len(os.sched_getaffinity(0)))
        sections.append(section)
        clocks.add(clock)
    meta["server_cpu_clock"] = "; ".join(sorted(clock for clock in clocks if clock))
    return sections


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (0, or 130 when interrupted)."""
    args = _parser().parse_args(argv)
    sizes = _sizes(args)
    plan = _chat_plan(args)
    only = [name for name in SCENARIOS if args.only is None or name in args.only]
    started = time.monotonic()
    meta = machine_info()
    scenarios.install_interrupt_handlers()
    try:
        sections = run(sizes, meta, args.rows, plan=plan, only=only)
    except KeyboardInterrupt:
        progress("interrupted: the servers are stopped")
        return 130
    meta.update(
        mode=args.mode,
        wall_seconds=time.monotonic() - started,
        sizes=dataclasses.asdict(sizes),
        chat=dataclasses.asdict(plan),
        scenarios=only,
    )
    sys.stdout.write(render(sections, _header(meta)))
    path: Path = args.json
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(meta, sections), indent=2) + "\n")
    progress(f"wrote {path.resolve()} ({meta['wall_seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
