"""Server functions the tests call: every kind of function, every way to fail.

The server runs in the test process (``run_in_thread``), so handlers record what happened
to them (cleanup ran, how far a generator got) in ``PROBES`` for the tests to read.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import enum
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from pydantic import BaseModel, Field
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from grpc_serverfn import Context, FailedPrecondition, InvalidArgument, NotFound, Registry

fns = Registry()


class Probe:
    """What one call's handler did, read by the test that made the call."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.cleaned_up = threading.Event()
        self.cancelled_seen = threading.Event()
        self.waiting = threading.Event()  # past its last yield, waiting to be cancelled
        self.acks = threading.Semaphore(0)  # released by the client for each chunk it got
        self.produced = 0
        self.remaining: list[float | None] = []
        self.cancelled_in_finally: bool | None = None  # ctx.cancelled, read in the finally


PROBES: dict[str, Probe] = {}


def probe(key: str) -> Probe:
    return PROBES.setdefault(key, Probe())


class Count(BaseModel):
    n: int = Field(ge=0, le=1_000_000)
    probe: str = ""


@fns.server_fn
async def count_async(data: Count) -> AsyncIterator[int]:
    """Yield 0..n-1 from an async generator."""
    for i in range(data.n):
        yield i


@fns.server_fn
def count_sync(data: Count) -> Iterator[int]:
    """Yield 0..n-1 from a sync generator."""
    yield from range(data.n)


@fns.server_fn
async def echo_async(data: Any) -> Any:
    """Return the input from a coroutine."""
    return data


@fns.server_fn
def echo_sync(data: Any) -> Any:
    """Return the input from a plain function."""
    return data


@fns.server_fn
async def no_input() -> dict[str, bool]:
    return {"ok": True}


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Model(BaseModel):
    name: str
    tags: list[str]


@fns.server_fn
async def rich_values() -> AsyncIterator[Any]:
    """One chunk of each kind of value orjson knows how to encode."""
    yield {"a": 1, "b": [1.5, None, True, "x"]}
    yield [1, 2, 3]
    yield "text"
    yield 42
    yield None
    yield Point(1, 2)
    yield Model(name="m", tags=["t"])
    yield datetime.datetime(2026, 12, 1, 12, 30, tzinfo=datetime.UTC)
    yield uuid.UUID("12345678-1234-5678-1234-567812345678")
    yield Colour.RED
    yield {"nested": {"point": Point(3, 4), "when": datetime.date(2026, 1, 2)}}


@fns.server_fn
async def fail_after(data: Count) -> AsyncIterator[int]:
    """Yield n chunks, then fail with FAILED_PRECONDITION and a detail."""
    for i in range(data.n):
        yield i
    raise FailedPrecondition("the widget is not ready")


@fns.server_fn
def fail_after_sync(data: Count) -> Iterator[int]:
    """Yield n chunks from a sync generator, then raise NotFound."""
    yield from range(data.n)
    raise NotFound("no such widget: w-42")


class SecretError(RuntimeError):
    pass


@fns.server_fn
async def crash_after(data: Count) -> AsyncIterator[int]:
    """Yield n chunks, then raise an unexpected exception with a secret in its message."""
    for i in range(data.n):
        yield i
    raise SecretError("password=hunter2 at /srv/app/secrets.py")


@fns.server_fn
def crash_sync() -> int:
    raise SecretError("password=hunter2")


@fns.server_fn
async def unencodable(data: Count) -> AsyncIterator[Any]:
    """Yield n chunks, then a value orjson cannot encode."""
    for i in range(data.n):
        yield i
    yield object()


@fns.server_fn
async def raise_invalid() -> AsyncIterator[int]:
    """Fail with InvalidArgument naming two fields."""
    raise InvalidArgument(
        "two fields are wrong", field_violations=[("a", "must be set"), ("b.c", "too long")]
    )
    yield 0  # pragma: no cover - makes this a generator


class Wait(BaseModel):
    probe: str
    seconds: float = 30.0
    chunks: int = 1


@fns.server_fn
async def wait_async(data: Wait) -> AsyncIterator[int]:
    """Yield some chunks, then wait (cancellably); records cleanup in its probe."""
    record = probe(data.probe)
    record.started.set()
    try:
        for i in range(data.chunks):
            yield i
        record.waiting.set()
        await asyncio.sleep(data.seconds)
        yield -1
    except asyncio.CancelledError:
        record.cancelled_seen.set()
        raise
    finally:
        record.cleaned_up.set()


@fns.server_fn(method="POST")
async def post_wait(data: Wait) -> AsyncIterator[int]:
    """``wait_async`` declared POST: it may act, so a client never makes it again once it may
    have run."""
    async for chunk in wait_async(data):
        yield chunk


@fns.server_fn
def wait_sync(data: Wait, ctx: Context) -> Iterator[int]:
    """A sync generator that yields chunks then polls ctx.cancelled; records cleanup."""
    record = probe(data.probe)
    record.started.set()
    try:
        yield from range(data.chunks)
        deadline = time.monotonic() + data.seconds
        record.waiting.set()
        while time.monotonic() < deadline:
            if ctx.cancelled:
                record.cancelled_seen.set()
                return
            time.sleep(0.01)
        yield -1
    finally:
        record.cleaned_up.set()


@fns.server_fn
def sync_endless(data: Wait) -> Iterator[int]:
    """A sync generator that never ends by itself: it must be closed at a yield."""
    record = probe(data.probe)
    record.started.set()
    try:
        i = 0
        while True:
            record.produced = i
            yield i
            i += 1
            time.sleep(0.001)
    finally:
        record.cleaned_up.set()


@fns.server_fn
async def endless(data: Wait) -> AsyncIterator[str]:
    """Yield 1 KiB chunks as fast as the transport takes them; counts what it produced."""
    record = probe(data.probe)
    record.started.set()
    payload = "x" * 1024
    try:
        while True:
            record.produced += 1
            yield payload
    finally:
        record.cleaned_up.set()


@fns.server_fn
def blocking_sleep(data: float) -> str:
    """Block its worker thread for `data` seconds."""
    time.sleep(data)
    return "slept"


@fns.server_fn
async def hog_loop(data: Wait) -> str:
    """Block the server's event loop for `data.seconds` (so that calls arriving meanwhile wait
    in grpc until the server takes them up); sets the probe's `started` first."""
    probe(data.probe).started.set()
    time.sleep(data.seconds)  # noqa: ASYNC251 - on the loop, on purpose
    return "hogged"


@fns.server_fn
async def deadline_probe(data: Wait, ctx: Context) -> AsyncIterator[float | None]:
    """Yield the time remaining, twice, then wait past the deadline."""
    record = probe(data.probe)
    try:
        for _ in range(2):
            remaining = ctx.time_remaining()
            record.remaining.append(remaining)
            yield remaining
            await asyncio.sleep(0.05)
        await asyncio.sleep(data.seconds)
    finally:
        record.cleaned_up.set()


class CallInfo(TypedDict):
    function: str
    peer: str
    token: str | None
    all_tags: list[str]
    time_remaining: float | None


@fns.server_fn
async def context_info(ctx: Context) -> CallInfo:
    """Report what the context says, and set two trailers."""
    ctx.set_trailing_metadata("x-handled-by", "context_info")
    ctx.set_trailing_metadata("x-checksum-bin", b"\x00\x01")
    token = ctx.metadata.get("x-token")
    return {
        "function": ctx.function,
        "peer": ctx.peer,
        "token": token if isinstance(token, str) else None,
        "all_tags": [str(tag) for tag in ctx.metadata.get_all("x-tag")],
        "time_remaining": ctx.time_remaining(),
    }


@fns.server_fn
async def trailer_then_fail(ctx: Context) -> AsyncIterator[int]:
    """Set a trailer, then fail: the trailer travels with the error status."""
    ctx.set_trailing_metadata("x-attempt", "1")
    raise FailedPrecondition("not yet")
    yield 0  # pragma: no cover - makes this a generator


@fns.server_fn
async def ping_pong(data: Wait) -> AsyncIterator[int]:
    """Yield a chunk, then wait until the client says it has it: a chunk held back waiting
    for more would never arrive, and this would fail after `seconds`."""
    record = probe(data.probe)
    for i in range(data.chunks):
        yield i
        if not await asyncio.to_thread(record.acks.acquire, timeout=data.seconds):
            raise FailedPrecondition(f"chunk {i} was not received within {data.seconds}s")


class Sized(BaseModel):
    n: int
    size: int


@fns.server_fn
async def big_after(data: Sized) -> AsyncIterator[str]:
    """Yield n small chunks, then one of `size` characters."""
    for i in range(data.n):
        yield str(i)
    yield "x" * data.size


@fns.server_fn
async def stubborn(data: Wait) -> AsyncIterator[int]:
    """Swallow the first three cancellations (the bug of a bare `except BaseException`)."""
    record = probe(data.probe)
    record.started.set()
    yield 0
    swallowed = 0
    record.waiting.set()
    try:
        while swallowed < 3:
            try:
                await asyncio.sleep(data.seconds)
            except BaseException:
                swallowed += 1
                record.cancelled_seen.set()
    finally:
        record.cleaned_up.set()


@fns.server_fn
async def wait_logged(data: Wait) -> AsyncIterator[int]:
    """wait_async for a server in another process: its cleanup is logged, not probed."""
    try:
        yield 0
        await asyncio.sleep(data.seconds)
        yield 1
    finally:
        logging.getLogger("tests.app").warning("cleaned up %s", data.probe)


class Firehose(BaseModel):
    probe: str
    size: int = Field(default=64 * 1024, ge=16, le=1024 * 1024)


GIBIBYTE = 1024**3


def _firehose_chunk(i: int, size: int) -> str:
    # A new string each time, as a real producer's would be: chunks queued anywhere in the
    # server then cost their own memory, which is what the slow-reader test measures.
    return f"{i:015d}".ljust(size, "x")


@fns.server_fn
async def firehose(data: Firehose) -> AsyncIterator[str]:
    """Yield a gibibyte in chunks of `size` characters, as fast as they are taken."""
    record = probe(data.probe)
    record.started.set()
    try:
        for i in range(GIBIBYTE // data.size):
            chunk = _firehose_chunk(i, data.size)
            record.produced += 1
            yield chunk
    finally:
        record.cleaned_up.set()


@fns.server_fn
def firehose_sync(data: Firehose) -> Iterator[str]:
    """firehose from a sync generator (a worker thread)."""
    record = probe(data.probe)
    record.started.set()
    try:
        for i in range(GIBIBYTE // data.size):
            chunk = _firehose_chunk(i, data.size)
            record.produced += 1
            yield chunk
    finally:
        record.cleaned_up.set()


class FirehoseProgress(TypedDict):
    produced: int
    cleaned_up: bool


@fns.server_fn
async def firehose_progress(data: str) -> FirehoseProgress:
    """How many chunks a firehose call (by probe key) has produced, and whether it cleaned up:
    for a test whose server runs in another process."""
    record = probe(data)
    return {"produced": record.produced, "cleaned_up": record.cleaned_up.is_set()}


@fns.server_fn
def whoami(ctx: Context) -> dict[str, Any] | None:
    """Who the server says is calling (ctx.identity, read from a worker thread); None: nobody."""
    identity = ctx.identity
    if identity is None:
        return None
    return {"subject": identity.subject, "common_name": identity.claims.get("common_name")}


@fns.server_fn
def pid() -> int:
    """The id of the process serving this call (which worker of `serve --workers N`)."""
    import os  # here, so this stays an append to the module

    return os.getpid()


@fns.server_fn
async def pid_then_wait(data: float) -> AsyncIterator[int]:
    """Yield the serving process's id, wait `data` seconds, then yield it again."""
    import os

    yield os.getpid()
    await asyncio.sleep(data)
    yield os.getpid()


class Ticks(BaseModel):
    probe: str = ""
    count: int = 5
    seconds: float = 0.02
    fail_at: int = -1
    crash_at: int = -1


@fns.server_fn(resumable=True)
async def resumable_ticks(data: Ticks) -> AsyncIterator[dict[str, int]]:
    """A resumable stream of `count` ticks, one every `seconds`, each naming the process that
    produced it; fails at tick `fail_at`. Its cleanup is probed and logged."""
    import os

    record = probe(data.probe) if data.probe else None
    if record is not None:
        record.started.set()
    try:
        for i in range(data.count):
            if i == data.fail_at:
                raise FailedPrecondition(f"tick {i} failed on purpose")
            if i == data.crash_at:
                raise RuntimeError(f"tick {i} crashed: a secret the caller must not see")
            yield {"tick": i, "pid": os.getpid()}
            await asyncio.sleep(data.seconds)
    except asyncio.CancelledError:
        if record is not None:
            record.cancelled_seen.set()
        raise
    finally:
        if record is not None:
            record.cleaned_up.set()
        logging.getLogger("tests.app").warning("resumable cleaned up %s", data.probe)


@fns.server_fn
async def fail_with(data: str) -> AsyncIterator[int]:
    """Yield one chunk, then fail with FAILED_PRECONDITION and `data` as the message."""
    yield 0
    raise FailedPrecondition(data)


@fns.server_fn
async def task_count() -> int:
    """How many asyncio tasks the serving process has (this call's own included): for leak
    checks against a server in another process."""
    return len(asyncio.all_tasks())


# count_live's handlers running now, and the callers' addresses (one per connection) they saw.
LIVE = {"handlers": 0}
LIVE_PEERS: collections.Counter[str] = collections.Counter()


@fns.server_fn
async def count_live(data: Count, ctx: Context) -> AsyncIterator[int]:
    """count_async, counted among the live handlers while it runs (``live_handlers``)."""
    LIVE["handlers"] += 1
    LIVE_PEERS[ctx.peer] += 1
    try:
        for i in range(data.n):
            yield i
    finally:
        LIVE["handlers"] -= 1


@fns.server_fn
async def live_handlers() -> dict[str, Any]:
    """How many count_live handlers are running, and how many calls each caller address made:
    for checks against a server in another process."""
    return {"handlers": LIVE["handlers"], "peers": dict(LIVE_PEERS)}


@fns.server_fn
async def commit_or_rollback(data: Wait, ctx: Context) -> AsyncIterator[int]:
    """Yield `chunks` chunks, wait; its finally reads ctx.cancelled, as a handler choosing
    between commit and rollback would."""
    record = probe(data.probe)
    record.started.set()
    try:
        for i in range(data.chunks):
            yield i
        record.waiting.set()
        await asyncio.sleep(data.seconds)
    finally:
        record.cancelled_in_finally = ctx.cancelled
        record.cleaned_up.set()


@fns.server_fn
async def commit_or_rollback_once(data: Wait, ctx: Context) -> str:
    """commit_or_rollback as a plain async function."""
    record = probe(data.probe)
    record.started.set()
    try:
        record.waiting.set()
        await asyncio.sleep(data.seconds)
        return "committed"
    finally:
        record.cancelled_in_finally = ctx.cancelled
        record.cleaned_up.set()
