"""(f) Chat capacity: how many concurrent chat streams one server sustains.

A chat stream is a server function yielding a ~20-byte token every 25 ms (40 tokens/s, an LLM's
pace) for ``ChatPlan.seconds``, each token due at the stream's start plus ``i`` intervals on
the server's own clock (see ``workload``). A probe runs N such streams, started in a ramp (stream
j at ``j * ramp / N``), from ``ChatPlan.clients`` client processes (``chat_clients``), each an
asyncio loop with every P-th stream, on at most ``STREAMS_PER_CHANNEL`` streams per connection.
Per token the client computes its delay, arrival minus due time (wall clocks of one machine).

A probe passes when every stream received all its tokens, in order, and the p99 of the delays
is under ``LATE_MS``. It stops early once it is sure to fail (a stream failed or fell short, or
more than 1% of all its tokens were ``LATE_MS`` or more late), and a stream not done
``ChatPlan.slack`` seconds after its last token was due counts as lost.

Every row first runs a probe at the common ``ChatPlan.fixed`` N (the row's p99 and server CPU
per token there), then searches for its largest N: it predicts it from the CPU the server and
the clients used at the fixed N, probes that, then one step of ``ChatPlan.resolution`` above or
below it, and bisects (geometrically) between the largest N that passed and the smallest that
failed, until they are within ``ChatPlan.resolution`` of each other or ``ChatPlan.probes``
probes were run (see ``_Search.next``). The baseline's fixed-N probe is repeated with twice the
client processes: if the clients held it back, that p99 would be lower.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from . import chat_clients
from .chat_clients import READY, Abort, Go, Job, Reply
from .report import Figure, Measurement, RowResult, Section
from .rows import BASELINE, RowSpec
from .scenarios import interrupted, progress
from .servers import ServerProcess

__all__ = ["LATE_MS", "STREAMS_PER_CHANNEL", "ChatPlan", "ClientPool", "ProbeResult", "chat"]

LATE_MS = 25.0
"""The p99 of a token's delay must be under this."""
INTERVAL_US = 25_000
"""A token every 25 ms: 40 tokens/s."""
STREAMS_PER_CHANNEL = 100
"""At most this many streams per connection (h2's, and so grpclib's, limit of concurrent
streams per connection is 100; beyond it a client would queue streams silently)."""
MORE_CLIENTS_KEY = "baseline-more-clients"
_READY_SECONDS = 60.0
_START_LEAD = 0.25  # seconds from "go" to the first stream's start
_IDLE_CPU = 0.05  # a server using less than this share of a core is done with the last probe
_IDLE_WAIT = 5.0
_LOAD_TARGET = 0.85  # predicting N: the server's share of a core it can reach in time
_MACHINE_TARGET = 0.9  # ... and the share of the machine's cores server and clients can
_CLIENT_MAX_SHARE = 0.5  # a client process busier than this may be holding its streams back

STREAMS = Figure("chat_streams", "N sustained", "streams", "higher")


@dataclass(frozen=True, slots=True)
class ChatPlan:
    """How the chat scenario runs."""

    seconds: float
    """Each stream's length."""
    ramp: float
    """Seconds over which a probe's streams start."""
    fixed: int
    """The N every row is probed at first: its p99 and CPU per token there."""
    probes: int
    """Probes per row after the fixed one, at most (0: no search)."""
    resolution: float
    """The search stops when the smallest failing N is within this of the largest passing."""
    clients: int
    """Client processes."""
    slack: float
    """Seconds after its last token was due that a stream may take to end."""

    @property
    def tokens(self) -> int:
        return max(1, round(self.seconds * 1e6 / INTERVAL_US))


@dataclass(slots=True)
class ProbeResult:
    """One probe of one row at one N."""

    streams: int
    clients: int
    tokens_expected: int
    tokens: int
    complete: int
    wall: float
    server_cpu: float
    client_cpu: float
    client_cpu_max: float
    """The busiest client process's CPU seconds."""
    p50_ms: float
    p99_ms: float
    max_ms: float
    setup_p99_ms: float
    """From a stream's call to the server's start of it, p99 (queued streams would show)."""
    errors: list[str]
    stopped: str | None
    worker_cpu: list[float]

    @property
    def lost(self) -> int:
        return self.tokens_expected - self.tokens

    @property
    def passed(self) -> bool:
        return (
            not self.errors
            and self.stopped is None
            and self.complete == self.streams
            and self.lost == 0
            and self.p99_ms < LATE_MS
        )

    @property
    def server_us_per_token(self) -> float:
        return 1e6 * self.server_cpu / max(1, self.tokens)

    @property
    def client_us_per_token(self) -> float:
        return 1e6 * self.client_cpu / max(1, self.tokens)

    def summary(self) -> str:
        """``200 ok p99 3.1 ms``, ``400 FAIL p99 80 ms, 3 tokens lost``, ``... (why stopped)``."""
        text = f"{self.streams} {'ok' if self.passed else 'FAIL'} p99 {self.p99_ms:,.1f} ms"
        if self.lost and not self.stopped:  # a probe stopped early leaves tokens unsent
            text += f", {self.lost:,} tokens lost"
        why = self.stopped or (self.errors[0] if self.errors else None)
        return f"{text} ({why})" if why else text

    def to_json(self) -> dict[str, Any]:
        return {
            "streams": self.streams,
            "passed": self.passed,
            "client_processes": self.clients,
            "tokens_expected": self.tokens_expected,
            "tokens_received": self.tokens,
            "tokens_lost": self.lost,
            "streams_complete": self.complete,
            "delay_p50_ms": self.p50_ms,
            "delay_p99_ms": self.p99_ms,
            "delay_max_ms": self.max_ms,
            "setup_p99_ms": self.setup_p99_ms,
            "wall_seconds": self.wall,
            "server_cpu_seconds": self.server_cpu,
            "server_cpu_us_per_token": self.server_us_per_token,
            "worker_cpu_seconds": self.worker_cpu,
            "client_cpu_seconds": self.client_cpu,
            "client_cpu_us_per_token": self.client_us_per_token,
            "client_cores": self.client_cpu / self.wall if self.wall else None,
            "busiest_client_core_share": self.client_cpu_max / self.wall if self.wall else None,
            "errors": self.errors,
            "stopped": self.stopped,
        }


def _percentiles(values: array[int], *percents: float) -> list[float]:
    """The given percentiles of ``values`` (µs), in ms (nearest rank); 0 when there are none."""
    if not values:
        return [0.0 for _ in percents]
    ordered = sorted(values)
    last = len(ordered) - 1
    return [ordered[min(last, math.ceil(p / 100 * len(ordered)) - 1)] / 1000 for p in percents]


class ClientPool:
    """The client processes, started once, reused by every probe; ``close`` stops them."""

    def __init__(self) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._processes: list[tuple[BaseProcess, Connection]] = []
        self._probes = 0

    def ensure(self, count: int) -> None:
        """Have at least ``count`` client processes."""
        while len(self._processes) < count:
            parent, child = self._context.Pipe()
            process = self._context.Process(
                target=chat_clients.serve, args=(child,), name="bench-chat-client", daemon=True
            )
            process.start()
            child.close()
            self._processes.append((process, parent))

    def probe(
        self,
        spec: RowSpec,
        server: ServerProcess,
        plan: ChatPlan,
        streams: int,
        clients: int,
        *,
        stop_early: bool,
    ) -> ProbeResult:
        """Run ``streams`` chat streams of ``spec``'s row against ``server`` from ``clients``
        processes; with ``stop_early``, only until the probe is sure to fail."""
        self.ensure(clients)
        self._probes += 1
        number = self._probes
        tokens = plan.tokens
        late_limit = int(0.01 * streams * tokens) if stop_early else None
        conns = [conn for _, conn in self._processes[:clients]]
        for index, conn in enumerate(conns):
            offsets = tuple(j * plan.ramp / streams for j in range(index, streams, clients))
            conn.send(
                Job(
                    probe=number,
                    row=spec.key,
                    endpoint=server.endpoint(),
                    offsets=offsets,
                    tokens=tokens,
                    interval_us=INTERVAL_US,
                    channels=max(spec.channels, math.ceil(len(offsets) / STREAMS_PER_CHANNEL)),
                    late_us=int(LATE_MS * 1000),
                    late_limit=late_limit,
                    give_up=plan.ramp + plan.seconds + plan.slack,
                )
            )
        replies: dict[Connection, Reply] = {}
        ready = self._gather(conns, replies, _READY_SECONDS)
        if len(ready) < len(conns):  # a process failed before the start: stop the others
            for conn in ready:
                conn.send(Abort(number))
            self._gather(ready, replies, _READY_SECONDS)
            return _combine(streams, clients, tokens, [replies[c] for c in conns], 0.0, 0.0, [])
        start = time.time() + _START_LEAD
        cpu, workers = server.cpu_seconds(), server.worker_cpu_seconds()
        for conn in ready:
            conn.send(Go(number, start))
        seconds = plan.ramp + plan.seconds + plan.slack + 60.0
        self._gather(ready, replies, seconds, abort=number if stop_early else None)
        wall = time.time() - start
        cpu = server.cpu_seconds() - cpu
        workers = [
            after - before
            for after, before in zip(server.worker_cpu_seconds(), workers, strict=True)
        ]
        return _combine(streams, clients, tokens, [replies[c] for c in conns], wall, cpu, workers)

    @staticmethod
    def _gather(
        conns: Sequence[Connection],
        replies: dict[Connection, Reply],
        seconds: float,
        *,
        abort: int | None = None,
    ) -> list[Connection]:
        """Wait for each of ``conns`` to answer READY or with its Reply (kept in ``replies``);
        those that answered READY. A Reply that fails probe ``abort`` makes the others stop."""
        waiting, answered = set(conns), []
        deadline = time.monotonic() + seconds
        while waiting:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(waiting)} chat client process(es) did not answer")
            for conn in wait(list(waiting), remaining):
                assert isinstance(conn, Connection)
                message = conn.recv()
                waiting.discard(conn)
                if message == READY:
                    answered.append(conn)
                    continue
                replies[conn] = message
                if abort is not None and (message.errors or message.stopped):
                    for other in waiting:
                        other.send(Abort(abort))
        return answered

    def close(self) -> None:
        for _, conn in self._processes:
            with contextlib.suppress(OSError):
                conn.send(None)
            conn.close()
        for process, _ in self._processes:
            process.join(2.0)
            if process.is_alive():
                process.kill()
                process.join()
        self._processes.clear()


def _combine(
    streams: int,
    clients: int,
    tokens: int,
    replies: Sequence[Reply],
    wall: float,
    server_cpu: float,
    worker_cpu: list[float],
) -> ProbeResult:
    delays, setups = array("q"), array("q")
    errors: list[str] = []
    for reply in replies:
        delays.frombytes(reply.delays)
        setups.frombytes(reply.setups)
        errors += [error for error in reply.errors if error not in errors]
    stopped = next((reply.stopped for reply in replies if reply.stopped), None)
    p50, p99, top = _percentiles(delays, 50, 99, 100)
    return ProbeResult(
        streams=streams,
        clients=clients,
        tokens_expected=streams * tokens,
        tokens=len(delays),
        complete=sum(reply.complete for reply in replies),
        wall=wall,
        server_cpu=server_cpu,
        client_cpu=sum(reply.cpu_seconds for reply in replies),
        client_cpu_max=max((reply.cpu_seconds for reply in replies), default=0.0),
        p50_ms=p50,
        p99_ms=p99,
        max_ms=top,
        setup_p99_ms=_percentiles(setups, 99)[0],
        errors=errors[:3],
        stopped=stopped,
        worker_cpu=worker_cpu,
    )


def _steady_share(cpu: float, plan: ChatPlan) -> float:
    """CPU seconds of a probe as the share of a core its N streams use while all are open
    (each stream is open ``plan.seconds``; the ramp and the teardown add little)."""
    return cpu / plan.seconds


def _predict(fixed: ProbeResult, plan: ChatPlan, cores: int) -> float:
    """The N at which the server, or the machine, would be about as busy as it can be and keep
    tokens on time, scaled from what N = ``fixed.streams`` used."""
    server = _steady_share(fixed.server_cpu, plan)
    both = _steady_share(fixed.server_cpu + fixed.client_cpu, plan)
    processes = max(1, len(fixed.worker_cpu))
    if not server or not both:
        return 2.0 * fixed.streams
    return fixed.streams * min(
        _LOAD_TARGET * min(processes, cores) / server, _MACHINE_TARGET * cores / both
    )


def _round(streams: float, step: int) -> int:
    """``streams`` to a multiple of ``step`` (the client processes share them evenly), at least
    ``step``."""
    return max(step, step * round(streams / step))


@dataclass(slots=True)
class _Search:
    """The probes of one row: the largest N that passed, the smallest that failed."""

    probes: list[ProbeResult]
    passed: int = 0
    failed: int | None = None

    def record(self, result: ProbeResult) -> None:
        self.probes.append(result)
        if result.passed:
            self.passed = max(self.passed, result.streams)
        elif self.failed is None or result.streams < self.failed:
            self.failed = result.streams

    def next(self, plan: ChatPlan, predicted: float, step: int) -> int | None:
        """The next N to probe, or None when the bracket is narrow enough.

        With a good prediction two probes bracket N within ``plan.resolution``: the predicted
        N, then one step of ``resolution`` above it (if it passed) or below (if it failed);
        further steps grow while they go the same way, and once an N passed and a larger one
        failed the search bisects between them (geometrically)."""
        low, high = self.passed, self.failed
        step_up = 1 + plan.resolution
        searched = self.probes[1:]
        if high is None:  # nothing failed yet: go up
            wanted = predicted if not searched else low * step_up ** len(searched)
            wanted = min(max(wanted, low * step_up), 4 * low)
        elif not low:  # nothing passed yet: go down
            # Two steps at a time once the prediction failed: likely to pass, and then one
            # bisection brackets N within a step.
            wanted = min(predicted, high / step_up) if not searched else high / step_up**2
        elif high <= low * step_up:
            return None
        elif len(searched) == 1 and not searched[0].passed:  # the prediction failed
            wanted = max(high / step_up, math.sqrt(low * high))
        else:
            wanted = math.sqrt(low * high)
        streams = _round(wanted, step)
        if streams in (low, high) or (high is not None and streams > high):
            return None
        return streams


def _wait_idle(server: ServerProcess) -> None:
    """Until the server is done with the last probe's streams (or ``_IDLE_WAIT`` passed)."""
    deadline = time.monotonic() + _IDLE_WAIT
    while time.monotonic() < deadline:
        before = server.cpu_seconds()
        time.sleep(0.2)
        if server.cpu_seconds() - before < _IDLE_CPU * 0.2:
            return


def _probe(
    pool: ClientPool,
    spec: RowSpec,
    server: ServerProcess,
    plan: ChatPlan,
    streams: int,
    clients: int,
    *,
    stop_early: bool = True,
) -> ProbeResult:
    _wait_idle(server)
    progress(
        f"(f) chat: {spec.key}, {streams} streams for {plan.seconds:g} s"
        f" ({clients} client processes)"
    )
    result = pool.probe(spec, server, plan, streams, clients, stop_early=stop_early)
    progress(f"(f) chat: {spec.key}, {result.summary()}")
    return result


FIGURE_KEYS = ("chat_streams", "delay_p99_ms", "cpu_us_per_token", "client_cpu_us_per_token")
"""The figures of the chat section, in its JSON."""


def _figures(plan: ChatPlan) -> tuple[Figure, ...]:
    at = f"@{plan.fixed}"
    return (
        STREAMS,
        Figure("delay_p99_ms", f"p99 ms {at}", "ms", "lower", "{:,.1f}"),
        Figure("cpu_us_per_token", f"CPU µs/token {at}", "µs", "lower", "{:,.1f}"),
        Figure("client_cpu_us_per_token", f"client µs/token {at}", "µs", "lower", "{:,.1f}"),
    )


def _record_fixed(row: RowResult, fixed: ProbeResult) -> None:
    """The figures a row reports from its probe at the fixed N."""
    row.values["delay_p99_ms"] = Measurement([fixed.p99_ms])
    row.values["cpu_us_per_token"] = Measurement([fixed.server_us_per_token])
    row.values["client_cpu_us_per_token"] = Measurement([fixed.client_us_per_token])


def _row(spec: RowSpec, search: _Search, fixed: ProbeResult | None) -> RowResult:
    row = RowResult(spec.key, spec.label)
    if search.passed and search.probes:
        row.values[STREAMS.key] = Measurement([float(search.passed)])
    if fixed is not None and fixed.tokens:
        _record_fixed(row, fixed)
    row.details = {
        "sustained": search.passed or None,
        "smallest_failed": search.failed,
        "probes": [probe.to_json() for probe in search.probes],
    }
    return row


def _row_line(spec: RowSpec, search: _Search) -> str:
    steps = "; ".join(probe.summary() for probe in search.probes)
    if not search.passed:
        verdict = "none passed"
    elif search.failed is None:
        verdict = f"N >= {search.passed} (no failing N found)"
    else:
        verdict = f"N = {search.passed} ({search.failed} failed)"
    return f"{spec.key}: {steps} -> {verdict}"


def _clients_lines(
    plan: ChatPlan, fixed: ProbeResult | None, more: ProbeResult | None
) -> list[str]:
    """How we know the clients were not the bottleneck (or that they may have been)."""
    if fixed is None or not fixed.wall:
        return []
    busiest = fixed.client_cpu_max / fixed.wall
    lines = [
        f"Clients at N={plan.fixed} (baseline): {plan.clients} processes used"
        f" {fixed.client_cpu / fixed.wall:.2f} cores in all, the busiest"
        f" {busiest:.0%} of a core"
        + (" (so none was saturated)." if busiest < _CLIENT_MAX_SHARE else " (a busy client!).")
    ]
    if more is not None and more.tokens:
        better = more.p99_ms < 0.8 * fixed.p99_ms
        lines.append(
            f"With {more.clients} client processes the baseline's p99 at N={plan.fixed} was"
            f" {more.p99_ms:,.1f} ms against {fixed.p99_ms:,.1f} ms with {fixed.clients}: "
            + (
                "lower: the clients may be holding the figures back."
                if better
                else "no better, so more client processes would not change the figures."
            )
        )
    return lines


class _Servers:
    """One server at a time, kept for consecutive rows of the same kind (the web row and the
    gRPC rows of ``serverfn`` share one, as in the other scenarios); ``close`` stops it."""

    def __init__(self) -> None:
        self._server: ServerProcess | None = None
        self.cpu_source = ""

    def get(self, kind: str) -> ServerProcess:
        if self._server is not None and (self._server.kind != kind or not self._server.alive()):
            self.close()
        if self._server is None:
            self._server = ServerProcess(kind)
            self.cpu_source = self._server.cpu_source
        return self._server

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


def _workers_note(spec: RowSpec, plan: ChatPlan, fixed: ProbeResult) -> str | None:
    if not fixed.worker_cpu or not fixed.server_cpu:
        return None
    split = "/".join(f"{cpu / fixed.server_cpu:.0%}" for cpu in fixed.worker_cpu)
    return (
        f"{spec.key}: at N={plan.fixed} its {len(fixed.worker_cpu)} workers took {split} of the"
        " server's CPU (the kernel spreads connections, not calls, over them)."
    )


def _more_clients_row(more: ProbeResult) -> RowResult:
    row = RowResult(MORE_CLIENTS_KEY, f"baseline, {more.clients} client processes (at N only)")
    _record_fixed(row, more)
    row.details = {"probes": [more.to_json()]}
    return row


def _load_average() -> str:
    """The machine's 1-minute load average (runnable processes), or '?'."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except (OSError, IndexError):
        return "?"


def chat(specs: Sequence[RowSpec], plan: ChatPlan, cores: int) -> tuple[Section, str]:
    """(f) every row's capacity in chat streams, its p99 and CPU per token at the fixed N;
    and where the servers' CPU time was read from."""
    load_before = _load_average()
    pool, servers = ClientPool(), _Servers()
    rows: list[RowResult] = []
    notes: list[str] = []
    fixed_baseline: ProbeResult | None = None
    more: ProbeResult | None = None
    try:
        pool.ensure(plan.clients)
        for spec in specs:
            search = _Search([])
            try:
                server = servers.get(spec.server)
                fixed = _probe(pool, spec, server, plan, plan.fixed, plan.clients, stop_early=False)
                search.record(fixed)
                if spec.key == BASELINE:
                    fixed_baseline = fixed
                    more = _probe(
                        pool, spec, server, plan, plan.fixed, 2 * plan.clients, stop_early=False
                    )
                predicted = _predict(fixed, plan, cores)
                for _ in range(plan.probes):
                    streams = search.next(plan, predicted, plan.clients)
                    if streams is None:
                        break
                    search.record(_probe(pool, spec, server, plan, streams, plan.clients))
                rows.append(_row(spec, search, fixed))
                notes.append(_row_line(spec, search))
                notes += filter(None, [_workers_note(spec, plan, fixed)])
            except Exception as error:
                if interrupted():
                    raise KeyboardInterrupt from error
                servers.close()  # whatever went wrong, the next row gets a fresh server
                rows.append(RowResult(spec.key, spec.label))
                rows[-1].fail(error)
                notes.append(_row_line(spec, search))
            if more is not None and spec.key == BASELINE:
                rows.append(_more_clients_row(more))
    finally:
        servers.close()
        pool.close()
    search_text = (
        f"then a search (the N predicted from the CPU used at N={plan.fixed}, a step of"
        f" {plan.resolution:.0%} up or down from it, then bisection) until the smallest failing"
        f" N is within {plan.resolution:.0%} of the largest passing one, at most {plan.probes}"
        " probes"
        if plan.probes
        else "no search (N sustained: the fixed N, if it passed)"
    )
    header = [
        f"A probe: N streams of {plan.tokens:,} tokens, one every {INTERVAL_US // 1000} ms on the"
        f" server's clock, started over {plan.ramp:g} s, from {plan.clients} client processes"
        f" (an asyncio loop each, at most {STREAMS_PER_CHANNEL} streams per connection);",
        "it passes when every stream gets all its tokens, in order, and the p99 of arrival - due"
        f" is under {LATE_MS:g} ms. Each row: a probe at N={plan.fixed}, {search_text}.",
        f"Server and clients share the machine's {cores} cores; its load average (1 min) was"
        f" {load_before} before and {_load_average()} after (another job lowers every N).",
        "Probes, in order (N, ok/FAIL, p99 of the delay):",
    ]
    section = Section(
        "f_chat",
        f"(f) chat capacity: concurrent streams of a ~20 B token every {INTERVAL_US // 1000} ms"
        f" for {plan.seconds:g} s, p99 delay < {LATE_MS:g} ms, no token lost; at N={plan.fixed}:"
        " p99 delay, server and client CPU per token",
        _figures(plan),
        rows,
        notes=[
            *header,
            *(f"  {line}" for line in notes),
            *_clients_lines(plan, fixed_baseline, more),
        ],
    )
    return section, servers.cpu_source
