"""What the benchmark measures, from the client process, against servers in their own processes.

(a) one long stream per run: chunks/s; (e) the server's CPU time per chunk during it.
(b) C concurrent streams on one channel per run: aggregate chunks/s.
(c) K sequential short calls of 3 chunks per run: time to the first chunk and to the end.
(d) the server's peak RSS after (a)-(c); and its RSS growth per open idle stream, each run on a
    freshly started server.

A row that fails (its client cannot be made, a call errors, chunks go missing) is recorded with
its error and the others go on. Each row's driver is made, warmed up and closed inside one
``asyncio.run``.
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


def _run_row(
    row: RowResult, spec: RowSpec, server: ServerProcess, body: Callable[[Driver], Awaitable[None]]
) -> None:
    """Make the row's driver, run ``body`` with it and close it, all in one event loop; a
    failure is recorded on ``row``."""

    async def main() -> None:
        driver = spec.make(server)
        row.note = getattr(driver, "note", None)
        try:
            await body(driver)
        finally:
            await driver.aclose()

    try:
        asyncio.run(main())
    except CoalesceUnsupported as error:
        row.fail(error, "coalesce-unsupported")
    except Exception as error:
        if _interrupted:  # the interrupt surfaced as the call's error
            raise KeyboardInterrupt from error
        row.fail(error)


def single_stream(
    specs: Sequence[RowSpec], servers: dict[str, ServerProcess], sizes: Sizes
) -> tuple[Section, Section]:
    """(a) one stream of ``chunks`` per run: chunks/s; and (e) server CPU µs per chunk."""
    count, size = sizes.chunks, sizes.chunk_bytes
    rates: list[RowResult] = []
    cpus: list[RowResult] = []
    for spec in specs:
        rate, cpu = RowResult(spec.key, spec.label), RowResult(spec.key, spec.label)
        server = servers[spec.server]
        progress(f"(a) one stream of {count:,} chunks: {spec.label}")

        async def body(
            driver: Driver,
            rate: RowResult = rate,
            cpu: RowResult = cpu,
            server: ServerProcess = server,
        ) -> None:
            warm = max(100, min(count // 10, 5_000))
            _expect(await driver.drain(warm, size), warm)
            rate_runs, cpu_runs = Measurement([]), Measurement([])
            rate.values[CHUNKS_PER_S.key], cpu.values[CPU_PER_CHUNK.key] = rate_runs, cpu_runs
            for _ in range(sizes.runs):
                cpu_before, start = server.cpu_seconds(), time.perf_counter()
                received = await driver.drain(count, size)
                elapsed, cpu_after = time.perf_counter() - start, server.cpu_seconds()
                _expect(received, count)
                rate_runs.runs.append(count / elapsed)
                cpu_runs.runs.append(1e6 * (cpu_after - cpu_before) / count)

        _run_row(rate, spec, server, body)
        if rate.error is not None:
            cpu.values.clear()
            cpu.error, cpu.error_kind = rate.error, rate.error_kind
        cpu.note = rate.note
        rates.append(rate)
        cpus.append(cpu)
    return (
        Section(
            "a_single_stream",
            f"(a) one stream of {count:,} chunks of ~{size} B of JSON each (one stream a run)",
            (CHUNKS_PER_S,),
            rates,
        ),
        Section(
            "e_cpu_per_chunk",
            "(e) server CPU time per chunk during (a) (user+system, all threads)",
            (CPU_PER_CHUNK,),
            cpus,
        ),
    )


def concurrent_streams(
    specs: Sequence[RowSpec], servers: dict[str, ServerProcess], sizes: Sizes
) -> list[Section]:
    """(b) for each concurrency C: C streams of ``concurrent_chunks`` at once on one channel."""
    count, size = sizes.concurrent_chunks, sizes.chunk_bytes
    sections = []
    for streams in sizes.concurrency:
        rows: list[RowResult] = []
        for spec in specs:
            if not spec.concurrent:
                continue
            row = RowResult(spec.key, spec.label)
            progress(f"(b) {streams} concurrent streams of {count:,} chunks: {spec.label}")

            async def body(driver: Driver, row: RowResult = row, streams: int = streams) -> None:
                assert isinstance(driver, AsyncDriver)
                warm = max(10, min(count // 10, 500))
                for received in await asyncio.gather(
                    *(driver.drain(warm, size) for _ in range(streams))
                ):
                    _expect(received, warm)
                rate_runs = row.values[CHUNKS_PER_S.key] = Measurement([])
                for _ in range(sizes.runs):
                    start = time.perf_counter()
                    results = await asyncio.gather(
                        *(driver.drain(count, size) for _ in range(streams))
                    )
                    elapsed = time.perf_counter() - start
                    for received in results:
                        _expect(received, count)
                    rate_runs.runs.append(streams * count / elapsed)

            _run_row(row, spec, servers[spec.server], body)
            rows.append(row)
        sections.append(
            Section(
                f"b_concurrent_{streams}",
                f"(b) {streams} concurrent streams of {count:,} chunks each, one channel:"
                " aggregate chunks/s",
                (CHUNKS_PER_S,),
                rows,
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
    rows: list[RowResult] = []
    for spec in specs:
        row = RowResult(spec.key, spec.label)
        progress(f"(c) {calls:,} sequential calls of {SHORT_CALL_CHUNKS} chunks: {spec.label}")

        async def body(driver: Driver, row: RowResult = row) -> None:
            for _ in range(min(calls, 20)):
                _expect((await driver.timed_call(SHORT_CALL_CHUNKS, size))[2], SHORT_CALL_CHUNKS)
            for figure in (FIRST_P50, FIRST_P99, END_P50, END_P99):
                row.values[figure.key] = Measurement([])
            for _ in range(sizes.runs):
                firsts, ends = [], []
                for _ in range(calls):
                    first, end, received = await driver.timed_call(SHORT_CALL_CHUNKS, size)
                    _expect(received, SHORT_CALL_CHUNKS)
                    firsts.append(first * 1e3)
                    ends.append(end * 1e3)
                row.values[FIRST_P50.key].runs.append(_percentile(firsts, 50))
                row.values[FIRST_P99.key].runs.append(_percentile(firsts, 99))
                row.values[END_P50.key].runs.append(_percentile(ends, 50))
                row.values[END_P99.key].runs.append(_percentile(ends, 99))

        _run_row(row, spec, servers[spec.server], body)
        rows.append(row)
    return Section(
        "c_short_calls",
        f"(c) {calls:,} sequential calls of {SHORT_CALL_CHUNKS} chunks per run, time to the"
        " first chunk and to the end",
        (FIRST_P50, FIRST_P99, END_P50, END_P99),
        rows,
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
