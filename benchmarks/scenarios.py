"""What the benchmark measures, from the client process, against servers in their own processes.

(a) one long stream at a time: chunks/s; (e) the server's CPU time per chunk during it.
(b) C concurrent streams on one channel: aggregate chunks/s, and server CPU time per chunk.
(c) K sequential short calls of 3 chunks per run: time to the first chunk and to the end.
(d) the server's peak RSS after (a)-(c); and its RSS growth per open idle stream, each run on a
    freshly started server.

Runs are taken in rounds, one run of every row per round (see ``_in_rounds``), so that rows
compared in a ratio ran side by side in time. In (a) and (b) a run repeats its calls until
``Sizes.min_run_seconds`` have passed. A row that fails (its client cannot be made, a call
errors, chunks go missing) is recorded with its error and the others go on.
"""

from __future__ import annotations

import asyncio
import math
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import FrameType

from .drivers import AsyncDriver, CoalesceUnsupported, Driver
from .report import Figure, Measurement, RowResult, Section
from .rows import IDLE_DRIVERS, SERVER_LABELS, RowSpec
from .servers import ServerProcess

__all__ = [
    "Sizes",
    "concurrent_streams",
    "idle_streams",
    "install_interrupt_handlers",
    "interrupted",
    "peak_memory",
    "progress",
    "short_calls",
    "single_stream",
]

SHORT_CALL_CHUNKS = 3
STREAMS_PER_CHANNEL = 100
"""Idle streams share a channel at most this many at a time (h2's, and so grpclib's, limit of
concurrent streams per connection is 100); every server gets the same layout."""
_SETTLE_SECONDS = 0.3

CHUNKS_PER_S = Figure("chunks_per_s", "chunks/s", "chunks/s", "higher")
CPU_PER_CHUNK = Figure("cpu_us_per_chunk", "CPU µs/chunk", "µs", "lower", "{:,.2f}")
FIRST_P50 = Figure("first_chunk_p50_ms", "first p50 ms", "ms", "lower", "{:,.3f}")
FIRST_P99 = Figure("first_chunk_p99_ms", "first p99 ms", "ms", "lower", "{:,.3f}")
END_P50 = Figure("end_p50_ms", "end p50 ms", "ms", "lower", "{:,.3f}")
END_P99 = Figure("end_p99_ms", "end p99 ms", "ms", "lower", "{:,.3f}")
PEAK_RSS = Figure("peak_rss_mib", "peak RSS MiB", "MiB", "lower", "{:,.1f}")
IDLE_STREAM = Figure("idle_stream_kib", "KiB/idle stream", "KiB", "lower", "{:,.1f}")


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much work each scenario does."""

    chunks: int
    concurrent_chunks: int
    concurrency: tuple[int, ...]
    calls: int
    idle_streams: int
    runs: int
    min_run_seconds: float = 0.0
    """(a) and (b): each run repeats its calls until at least this long has passed."""
    chunk_bytes: int = 64


_STARTED = time.monotonic()


def progress(message: str) -> None:
    """One line on stderr, with the seconds since the start; the results go to stdout."""
    print(f"==> {time.monotonic() - _STARTED:6.1f}s {message}", file=sys.stderr, flush=True)


_interrupted = False


def _interrupt(signum: int, frame: FrameType | None) -> None:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def interrupted() -> bool:
    """Whether SIGINT or SIGTERM arrived (an error that follows is the interrupt's doing)."""
    return _interrupted


def install_interrupt_handlers() -> None:
    """Make SIGINT and SIGTERM raise KeyboardInterrupt wherever the client is, so that the
    servers are stopped on the way out.

    asyncio.run's own SIGINT handling only cancels the running task: a blocking ``Client`` row
    never sees that, and a grpc-serverfn client turns the cancelled call into an error, which
    would be recorded as the row's and the run would go on.
    """
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


class MissingChunks(RuntimeError):
    """A call ended with fewer (or more) chunks than asked for."""


def _expect(received: int, expected: int) -> None:
    if received != expected:
        raise MissingChunks(f"received {received} chunks, expected {expected}")


Warm = Callable[[Driver], Awaitable[None]]
Measure = Callable[[Driver, RowResult], Awaitable[None]]


def _fail(row: RowResult, error: Exception) -> None:
    if _interrupted:  # the interrupt surfaced as the call's error
        raise KeyboardInterrupt from error
    if isinstance(error, CoalesceUnsupported):
        row.fail(error, "coalesce-unsupported")
    else:
        row.fail(error)


def _in_rounds(
    what: str,
    rows: Sequence[tuple[RowSpec, RowResult]],
    servers: dict[str, ServerProcess],
    runs: int,
    warm: Warm,
    measure: Measure,
) -> None:
    """Make every row's driver and ``warm`` it up, then take the ``runs`` in rounds: each round
    ``measure``s every row once, each round in an order rotated by one. A change in the
    machine's speed (common on a shared VM) then reaches every row alike, instead of whichever
    row ran last, so ratios between rows are ratios of like with like. A row that fails is
    recorded and left out of later rounds; every driver is closed, all in one event loop."""

    async def main() -> None:
        live: list[tuple[RowResult, Driver]] = []
        try:
            for spec, row in rows:
                try:
                    driver = spec.make(servers[spec.server])
                except Exception as error:
                    _fail(row, error)
                    continue
                live.append((row, driver))
                row.note = getattr(driver, "note", None)
                try:
                    await warm(driver)
                except Exception as error:
                    _fail(row, error)
            for index in range(runs):
                active = [(row, driver) for row, driver in live if row.error is None]
                if not active:
                    break
                progress(f"{what}: round {index + 1} of {runs}, {len(active)} rows")
                shift = index % len(active)
                for row, driver in active[shift:] + active[:shift]:
                    try:
                        await measure(driver, row)
                    except Exception as error:
                        _fail(row, error)
        finally:
            for _, driver in live:
                await driver.aclose()

    asyncio.run(main())


async def _for_at_least(seconds: float, work: Callable[[], Awaitable[int]]) -> tuple[int, float]:
    """Repeat ``work`` (which returns chunks received) until ``seconds`` have passed, at least
    once: the chunks and the seconds in all. A run too short to time well (a coalescing row
    streams 1,500 chunks in a few milliseconds) so lasts long enough to mean something."""
    received, start = 0, time.perf_counter()
    while True:
        received += await work()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return received, elapsed


def single_stream(
    specs: Sequence[RowSpec], servers: dict[str, ServerProcess], sizes: Sizes
) -> tuple[Section, Section]:
    """(a) streams of ``chunks``, one at a time: chunks/s; and (e) server CPU µs per chunk."""
    count, size = sizes.chunks, sizes.chunk_bytes
    rows = [(spec, RowResult(spec.key, spec.label, versus=spec.versus)) for spec in specs]
    cpus = {spec.key: RowResult(spec.key, spec.label, versus=spec.versus) for spec in specs}
    server_of = {spec.key: servers[spec.server] for spec in specs}

    async def warm(driver: Driver) -> None:
        chunks = max(100, min(count // 10, 5_000))
        _expect(await driver.drain(chunks, size), chunks)

    async def measure(driver: Driver, row: RowResult) -> None:
        server = server_of[row.key]

        async def one() -> int:
            received = await driver.drain(count, size)
            _expect(received, count)
            return received

        cpu_before = server.cpu_seconds()
        received, elapsed = await _for_at_least(sizes.min_run_seconds, one)
        cpu_after = server.cpu_seconds()
        row.values.setdefault(CHUNKS_PER_S.key, Measurement([])).runs.append(received / elapsed)
        cpu = cpus[row.key].values.setdefault(CPU_PER_CHUNK.key, Measurement([]))
        cpu.runs.append(1e6 * (cpu_after - cpu_before) / received)

    _in_rounds(f"(a) one stream of {count:,} chunks", rows, servers, sizes.runs, warm, measure)
    for _, row in rows:
        cpu = cpus[row.key]
        cpu.note = row.note
        if row.error is not None:
            cpu.values.clear()
            cpu.error, cpu.error_kind = row.error, row.error_kind
    return (
        Section(
            "a_single_stream",
            f"(a) one stream of {count:,} chunks of ~{size} B of JSON each (one stream at a time)",
            (CHUNKS_PER_S,),
            [row for _, row in rows],
        ),
        Section(
            "e_cpu_per_chunk",
            "(e) server CPU time per chunk during (a) (user+system, all threads)",
            (CPU_PER_CHUNK,),
            list(cpus.values()),
        ),
    )


def concurrent_streams(
    specs: Sequence[RowSpec], servers: dict[str, ServerProcess], sizes: Sizes
) -> list[Section]:
    """(b) for each concurrency C: C streams of ``concurrent_chunks`` at once on one channel."""
    count, size = sizes.concurrent_chunks, sizes.chunk_bytes
    server_of = {spec.key: servers[spec.server] for spec in specs}
    sections = []
    for streams in sizes.concurrency:
        rows = [
            (spec, RowResult(spec.key, spec.label, versus=spec.versus))
            for spec in specs
            if spec.concurrent
        ]

        async def at_once(driver: Driver, chunks: int, streams: int = streams) -> int:
            assert isinstance(driver, AsyncDriver)
            results = await asyncio.gather(*(driver.drain(chunks, size) for _ in range(streams)))
            for received in results:
                _expect(received, chunks)
            return sum(results)

        async def warm(driver: Driver, at_once: Callable[..., Awaitable[int]] = at_once) -> None:
            await at_once(driver, max(10, min(count // 10, 500)))

        async def measure(
            driver: Driver, row: RowResult, at_once: Callable[..., Awaitable[int]] = at_once
        ) -> None:
            server = server_of[row.key]
            cpu_before = server.cpu_seconds()
            received, elapsed = await _for_at_least(
                sizes.min_run_seconds, lambda: at_once(driver, count)
            )
            cpu = server.cpu_seconds() - cpu_before
            row.values.setdefault(CHUNKS_PER_S.key, Measurement([])).runs.append(received / elapsed)
            row.values.setdefault(CPU_PER_CHUNK.key, Measurement([])).runs.append(
                1e6 * cpu / received
            )

        what = f"(b) {streams} concurrent streams of {count:,} chunks"
        _in_rounds(what, rows, servers, sizes.runs, warm, measure)
        sections.append(
            Section(
                f"b_concurrent_{streams}",
                f"(b) {streams} concurrent streams of {count:,} chunks each, one channel:"
                " aggregate chunks/s, and the server's CPU time per chunk",
                (CHUNKS_PER_S, CPU_PER_CHUNK),
                [row for _, row in rows],
            )
        )
    return sections


def _percentile(values: Sequence[float], percent: int) -> float:
    """The ``percent``-th percentile (inclusive method, interpolated)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def short_calls(
    specs: Sequence[RowSpec], servers: dict[str, ServerProcess], sizes: Sizes
) -> Section:
    """(c) ``calls`` sequential calls of 3 chunks per run: first-chunk and end times."""
    calls, size = sizes.calls, sizes.chunk_bytes
    rows = [(spec, RowResult(spec.key, spec.label, versus=spec.versus)) for spec in specs]

    async def warm(driver: Driver) -> None:
        for _ in range(min(calls, 20)):
            _expect((await driver.timed_call(SHORT_CALL_CHUNKS, size))[2], SHORT_CALL_CHUNKS)

    async def measure(driver: Driver, row: RowResult) -> None:
        firsts, ends = [], []
        for _ in range(calls):
            first, end, received = await driver.timed_call(SHORT_CALL_CHUNKS, size)
            _expect(received, SHORT_CALL_CHUNKS)
            firsts.append(first * 1e3)
            ends.append(end * 1e3)
        for figure, times, percent in (
            (FIRST_P50, firsts, 50),
            (FIRST_P99, firsts, 99),
            (END_P50, ends, 50),
            (END_P99, ends, 99),
        ):
            row.values.setdefault(figure.key, Measurement([])).runs.append(
                _percentile(times, percent)
            )

    what = f"(c) {calls:,} sequential calls of {SHORT_CALL_CHUNKS} chunks"
    _in_rounds(what, rows, servers, sizes.runs, warm, measure)
    return Section(
        "c_short_calls",
        f"(c) {calls:,} sequential calls of {SHORT_CALL_CHUNKS} chunks per run, time to the"
        " first chunk and to the end",
        (FIRST_P50, FIRST_P99, END_P50, END_P99),
        [row for _, row in rows],
    )


def peak_memory(servers: dict[str, ServerProcess]) -> tuple[dict[str, float], dict[str, str]]:
    """(d) each server's peak RSS (VmHWM) so far, in MiB; and why it could not be read."""
    peaks: dict[str, float] = {}
    errors: dict[str, str] = {}
    for kind, server in servers.items():
        try:
            peaks[kind] = server.peak_rss_kib() / 1024
        except OSError as error:
            errors[kind] = f"the {kind} server is gone: {error}"
    return peaks, errors


async def _idle_run(server: ServerProcess, streams: int) -> float:
    """Open ``streams`` idle streams on a fresh server: its RSS growth per stream, in KiB."""
    make = IDLE_DRIVERS[server.kind]
    drivers = [make(server) for _ in range(math.ceil(streams / STREAMS_PER_CHANNEL))]
    opened = []
    try:
        # Connect every channel and warm the server up before the "before" reading.
        for driver in drivers:
            await (await driver.open_idle()).close()
        await asyncio.sleep(_SETTLE_SECONDS)
        before = server.rss_kib()
        for index, driver in enumerate(drivers):
            batch = min(STREAMS_PER_CHANNEL, streams - index * STREAMS_PER_CHANNEL)
            opened += await asyncio.gather(*(driver.open_idle() for _ in range(batch)))
        await asyncio.sleep(_SETTLE_SECONDS)
        after = server.rss_kib()
    finally:
        for stream in opened:
            await stream.close()
        for driver in drivers:
            await driver.aclose()
    return (after - before) / streams


def idle_streams(
    kinds: Sequence[str], sizes: Sizes, peaks: dict[str, float], peak_errors: dict[str, str]
) -> Section:
    """(d) per server: peak RSS from the main run, and RSS per open idle stream, each run of
    which starts its own server process."""
    rows: list[RowResult] = []
    for kind in kinds:
        row = RowResult(kind, SERVER_LABELS[kind])
        progress(f"(d) {sizes.idle_streams:,} idle streams, fresh server: {SERVER_LABELS[kind]}")
        try:
            per_stream = []
            for _ in range(sizes.runs):
                with ServerProcess(kind) as server:
                    per_stream.append(asyncio.run(_idle_run(server, sizes.idle_streams)))
            row.values[IDLE_STREAM.key] = Measurement(per_stream)
        except Exception as error:
            if _interrupted:
                raise KeyboardInterrupt from error
            row.fail(error)
        if kind in peaks:
            row.values[PEAK_RSS.key] = Measurement([peaks[kind]])
        elif row.error is None:
            row.error, row.error_kind = peak_errors.get(kind, "no peak RSS"), "error"
        rows.append(row)
    return Section(
        "d_memory",
        "(d) server memory: peak RSS after (a)-(c), and RSS growth per open idle stream"
        f" ({sizes.idle_streams:,} streams, {STREAMS_PER_CHANNEL} per channel)",
        (PEAK_RSS, IDLE_STREAM),
        rows,
    )
