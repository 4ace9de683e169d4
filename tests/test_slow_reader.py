"""Slow readers: a handler that would produce a gibibyte as fast as it can, read one chunk every
10 ms for a few seconds, is held back by backpressure: the server's memory stays flat and the
generator runs only a bounded number of chunks ahead of the reader. The server runs in its own
process, so that its memory can be read; a second channel asks it how far the generator has got.
"""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from grpc_serverfn import Client
from grpc_serverfn._concurrency import READ_AHEAD
from grpc_serverfn._wire import MAX_BATCH
from grpc_serverfn.config import DEFAULT_MAX_MESSAGE_BYTES
from tests.processes import PROMPTLY, ServerProcess, serving

KIB = 1024
MIB = 1024 * KIB
READ_EVERY = 0.01  # seconds between two chunks the reader takes
MIN_READ = 100  # chunks the reader takes before it may leave
SAMPLE_EVERY = 10  # chunks read between two looks at the server
RSS_GROWTH_LIMIT = 50 * 1000 * 1000  # bytes: the "less than 50 MB"

# How far ahead of the reader the generator may run, in bytes of chunks, is what the transport
# holds plus what the toolkit queues in front of it:
# - the transport: the reader's HTTP/2 stream window (grpc grows it from 64 KiB by BDP probing;
#   on loopback it reached 4.0 MiB with 1 KiB chunks and up to 6.2 MiB with 64 KiB ones), the
#   socket buffers (near empty: `ss` showed under 64 KiB queued) and the one message whose write
#   is pending. TRANSPORT is twice the largest figure seen.
# - one chunk per message: the message being written; a sync generator's worker thread may
#   also be READ_AHEAD chunks ahead, on either path.
# - coalescing: the producer's buffer, the batch being packed and the batch being written, each
#   at most MAX_BATCH chunks or a batch's byte bound (max message size / 4 characters, as the
#   server sets it). The byte bound is what keeps big chunks in check: MAX_BATCH chunks of
#   64 KiB would be 64 MiB.
# Measured run-ahead, in chunks, on 2 cores over five runs (the bound in brackets):
#   64 KiB: one per message 76-100, sync 96-114 (192/208); coalesced 102, sync 114-123 (239/255)
#   1 KiB: one per message 4,045-4,104 (12,265/12,281); coalesced 5,602-7,158 (15,330/15,346)
TRANSPORT = 12 * MIB
BATCH_CHARACTERS = DEFAULT_MAX_MESSAGE_BYTES // 4 - 1024


def run_ahead_bound(size: int, *, coalesce: bool, sync: bool) -> int:
    """The most chunks of `size` characters the generator may have produced beyond those read."""
    wire = size + 2  # the JSON string's quotes
    bound = TRANSPORT // wire
    if coalesce:
        bound += 3 * min(MAX_BATCH, BATCH_CHARACTERS // wire + 1)
    else:
        bound += 1
    if sync:
        bound += READ_AHEAD
    return bound


pytestmark = pytest.mark.load


@pytest.fixture(scope="module")
def server_process() -> Iterator[ServerProcess]:
    with serving("tests.app:fns", "--port", "0") as server:
        server.wait_serving()
        yield server


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match is not None
    return int(match.group(1)) * KIB


@dataclasses.dataclass
class SlowRead:
    rss_before: int
    rss_peak: int = 0
    read: int = 0
    max_ahead: int = 0
    cleaned_up: bool = False
    produced_after: tuple[int, int] = (0, 0)  # the counter, twice, 0.2 s apart after cleanup
    served_after: object = None


def read_slowly(
    server: ServerProcess, function: str, size: int, *, coalesce: bool, seconds: float
) -> SlowRead:
    """Take `function`'s chunks one every READ_EVERY for `seconds`, then leave the stream."""
    key = uuid.uuid4().hex
    with Client(server.address) as monitor, Client(server.address, coalesce=coalesce) as reader:

        def progress() -> dict[str, int]:
            answer: dict[str, int] = monitor.call("firehose_progress", key, timeout=PROMPTLY)
            return answer

        progress()  # the monitor's channel is up before the baseline is taken
        run = SlowRead(rss_before=rss_bytes(server.pid))
        run.rss_peak = run.rss_before
        end = time.monotonic() + seconds
        with reader.invoke(function, {"probe": key, "size": size}) as stream:
            for chunk in stream:
                assert chunk[:15] == f"{run.read:015d}", "a chunk was lost or reordered"
                assert len(chunk) == size
                run.read += 1
                # At least MIN_READ chunks, however slowly a loaded machine lets the reader go.
                last = time.monotonic() >= end and run.read >= MIN_READ
                if last or run.read % SAMPLE_EVERY == 0:
                    # `read` holds still while the server is asked: this can only overstate.
                    run.max_ahead = max(run.max_ahead, progress()["produced"] - run.read)
                    run.rss_peak = max(run.rss_peak, rss_bytes(server.pid))
                if last:
                    break
                time.sleep(READ_EVERY)
        deadline = time.monotonic() + PROMPTLY
        run.cleaned_up = bool(progress()["cleaned_up"])
        while not run.cleaned_up and time.monotonic() < deadline:
            time.sleep(0.01)
            run.cleaned_up = bool(progress()["cleaned_up"])
        first = progress()["produced"]
        time.sleep(0.2)
        run.produced_after = (first, progress()["produced"])
        run.served_after = monitor.call("echo_async", "still serving", timeout=PROMPTLY)
    return run


@pytest.mark.parametrize("coalesce", [False, True], ids=["one-per-message", "coalesced"])
@pytest.mark.parametrize("function", ["firehose", "firehose_sync"])
@pytest.mark.parametrize(("size", "seconds"), [(64 * KIB, 3.0), (KIB, 2.0)], ids=["64KiB", "1KiB"])
def test_a_slow_reader_holds_a_gibibyte_firehose_back(
    server_process: ServerProcess, function: str, coalesce: bool, size: int, seconds: float
) -> None:
    run = read_slowly(server_process, function, size, coalesce=coalesce, seconds=seconds)
    growth = run.rss_peak - run.rss_before
    bound = run_ahead_bound(size, coalesce=coalesce, sync=function == "firehose_sync")
    print(
        f"\n{function} {size // KIB} KiB coalesce={coalesce}: read {run.read};"
        f" max ahead {run.max_ahead} chunks ({run.max_ahead * size / MIB:.1f} MiB), bound {bound};"
        f" server RSS {run.rss_before / MIB:.1f} -> {run.rss_peak / MIB:.1f} MiB"
        f" (+{growth / MIB:.1f})"
    )
    assert run.read >= MIN_READ, "the reader did not get to read slowly for long"
    assert growth < RSS_GROWTH_LIMIT, f"the server's RSS grew by {growth / MIB:.1f} MiB"
    assert run.max_ahead <= bound, f"the generator ran {run.max_ahead} chunks ahead"
    assert run.cleaned_up, "the handler's cleanup did not run after the reader left"
    assert run.produced_after[0] == run.produced_after[1], "the generator kept producing"
    assert run.served_after == "still serving"
