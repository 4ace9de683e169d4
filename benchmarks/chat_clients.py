"""The chat scenario's client processes: each an asyncio loop driving its share of the streams.

The parent (``benchmarks.chat``) starts them once (``spawn``: a fresh interpreter, no grpc state
inherited) and talks to each over a pipe, one probe at a time:

1. it sends a ``Job``: which row, which server, when each of this process's streams starts;
2. the process opens its connections (the row's driver, ``Job.channels`` of them), runs one
   short stream on each (connected and warm), and answers ``READY``;
3. the parent sends ``Go`` with the common start time on the wall clock, and the process starts
   each stream at its offset from it;
4. it answers with a ``Reply``: every token's delay (arrival minus due time, µs), what was lost,
   and the CPU time the process used while its streams ran.

Per token a process does the least it can: the driver receives and decodes the message, and
``_Sink.add`` reads the clock, checks the token's position and appends its delay. A process
stops early, and the parent tells the others to stop (``Abort``), once the probe is sure to
fail: a stream failed or lost tokens, or more tokens were late than the whole probe may have;
unless the probe is one whose figures are reported (``Job.late_limit`` None): that one runs
every stream to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from .drivers import Driver
from .rows import CHAT_ROWS
from .servers import Endpoint

__all__ = ["READY", "Abort", "Go", "Job", "OutOfOrder", "Reply", "serve"]

READY = "ready"
_SPECS = {spec.key: spec for spec in CHAT_ROWS}
_WARM_TOKENS = 2


class OutOfOrder(RuntimeError):
    """A token arrived out of its place in the stream (one went missing, or came twice)."""


@dataclass(frozen=True, slots=True)
class Job:
    """One probe's share of the streams for one client process."""

    probe: int
    """The probe's number: messages of an earlier probe still in the pipe are dropped."""
    row: str
    """The key of a ``CHAT_ROWS`` row."""
    endpoint: Endpoint
    offsets: tuple[float, ...]
    """When each stream starts, seconds after the common start."""
    tokens: int
    interval_us: int
    channels: int
    """Connections to open; the streams take them in turn."""
    late_us: int
    """A token this late or later is late."""
    late_limit: int | None
    """Late tokens the whole probe may have (over all processes) and still pass; None: run
    every stream to its end whatever happens (a probe whose figures are reported)."""
    give_up: float
    """Seconds after the common start by which every stream must have ended."""


@dataclass(frozen=True, slots=True)
class Go:
    """Start: the common start time, seconds since the Unix epoch."""

    probe: int
    start: float


@dataclass(frozen=True, slots=True)
class Abort:
    """The probe has failed elsewhere: stop every stream now."""

    probe: int


@dataclass(slots=True)
class Reply:
    """What one process's streams received."""

    complete: int
    """Streams that received all their tokens, in order."""
    delays: bytes = b""
    """``array("q")``: every token's delay, µs (one per token received, in order)."""
    setups: bytes = b""
    """``array("q")``: per started stream, from its call to the server's start of it, µs."""
    cpu_seconds: float = 0.0
    """This process's CPU time while its streams ran (all threads)."""
    errors: list[str] = field(default_factory=list)
    stopped: str | None = None
    """Why it stopped before every stream ended, if it did."""


class _Probe:
    """The state of one process's share of a probe."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.late = 0
        self.errors: list[str] = []
        self.failed = asyncio.Event()
        """Set when the probe is sure to fail (only if it may stop early)."""
        self.stop: str | None = None
        self.sinks: list[_Sink] = []

    def on_late(self) -> None:
        self.late += 1
        limit = self.job.late_limit
        if limit is not None and self.late > limit and not self.failed.is_set():
            self.stop = f"over {limit:,} tokens {self.job.late_us / 1000:g} ms late"
            self.failed.set()

    def fail(self, why: str) -> None:
        if len(self.errors) < 3:
            self.errors.append(why)
        if self.job.late_limit is not None:
            self.failed.set()

    async def stream(self, driver: Driver, start: float) -> None:
        await asyncio.sleep(max(0.0, start - time.time()))
        sink = _Sink(self)
        self.sinks.append(sink)
        try:
            await driver.chat(self.job.tokens, self.job.interval_us, sink)
        except Exception as error:
            self.fail(f"{type(error).__name__}: {error}".splitlines()[0][:300])
            return
        if len(sink.delays) != self.job.tokens:
            self.fail(f"a stream ended after {len(sink.delays)} of {self.job.tokens} tokens")


class _Sink:
    """One stream's tokens (a ``drivers.TokenSink``)."""

    __slots__ = ("delays", "due0", "issued", "late_us", "probe")

    def __init__(self, probe: _Probe) -> None:
        self.probe = probe
        self.late_us = probe.job.late_us
        self.delays = array("q")
        self.due0 = 0
        self.issued = time.time_ns() // 1000

    def add(self, seq: int, due_us: int) -> None:
        delay = time.time_ns() // 1000 - due_us
        delays = self.delays
        if seq != len(delays):
            raise OutOfOrder(f"token {seq} arrived where token {len(delays)} was due")
        if not seq:
            self.due0 = due_us
        delays.append(delay)
        if delay >= self.late_us:
            self.probe.on_late()


class _Discard:
    def add(self, seq: int, due_us: int) -> None:
        pass


class _Inbox:
    """The parent's messages, read as they arrive without blocking the loop."""

    def __init__(self, conn: Connection, probe: int) -> None:
        self._conn = conn
        self._probe = probe
        self._queue: asyncio.Queue[Go | Abort] = asyncio.Queue()
        asyncio.get_running_loop().add_reader(conn.fileno(), self._read)

    def _read(self) -> None:
        while self._conn.poll():
            message = self._conn.recv()
            if isinstance(message, Go | Abort) and message.probe == self._probe:
                self._queue.put_nowait(message)

    async def get(self) -> Go | Abort:
        return await self._queue.get()

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self._conn.fileno())


async def _run(job: Job, conn: Connection) -> Reply:
    inbox = _Inbox(conn, job.probe)
    drivers: list[Driver] = []
    try:
        make = _SPECS[job.row].make
        drivers = [make(job.endpoint) for _ in range(job.channels)]
        await asyncio.gather(*(driver.chat(_WARM_TOKENS, 1_000, _Discard()) for driver in drivers))
        conn.send(READY)
        message = await inbox.get()
        if isinstance(message, Abort):
            return Reply(0, stopped="told to stop before the start")
        return await _streams(job, drivers, inbox, message.start)
    finally:
        inbox.close()
        for driver in drivers:
            with contextlib.suppress(Exception):
                await driver.aclose()


async def _streams(job: Job, drivers: list[Driver], inbox: _Inbox, start: float) -> Reply:
    probe = _Probe(job)
    cpu = time.process_time()
    tasks = [
        asyncio.create_task(probe.stream(drivers[index % len(drivers)], start + offset))
        for index, offset in enumerate(job.offsets)
    ]
    ended = asyncio.ensure_future(asyncio.gather(*tasks))
    failed = asyncio.ensure_future(probe.failed.wait())
    told = asyncio.ensure_future(inbox.get())
    await asyncio.wait(
        (ended, failed, told),
        timeout=max(0.0, start + job.give_up - time.time()),
        return_when=asyncio.FIRST_COMPLETED,
    )
    stopped = None
    if not ended.done():
        if probe.failed.is_set():
            stopped = probe.stop or f"stopped: {probe.errors[0]}"
        elif told.done():
            stopped = "told to stop: the probe failed in another client process"
        else:
            stopped = f"gave up {job.give_up:g} s after the start"
        for task in tasks:
            task.cancel()
    for waiter in (ended, failed, told):
        waiter.cancel()
    await asyncio.gather(ended, failed, told, return_exceptions=True)
    cpu = time.process_time() - cpu
    delays, setups = array("q"), array("q")
    complete = 0
    for sink in probe.sinks:
        delays.extend(sink.delays)
        if sink.due0:
            setups.append(sink.due0 - sink.issued)
        complete += len(sink.delays) == job.tokens
    return Reply(
        complete=complete,
        delays=delays.tobytes(),
        setups=setups.tobytes(),
        cpu_seconds=cpu,
        errors=probe.errors,
        stopped=stopped,
    )


def serve(conn: Connection) -> None:
    """A client process's main: run each ``Job`` the parent sends, until it sends None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it (a Ctrl-C reaches both)
    while True:
        job: Any = conn.recv()
        if job is None:
            return
        if not isinstance(job, Job):
            continue  # a stale Go or Abort of a probe that ended
        try:
            reply = asyncio.run(_run(job, conn))
        except Exception as error:
            reply = Reply(0, errors=[f"{type(error).__name__}: {error}"])
            reply.stopped = "the client process failed"
        conn.send(reply)
