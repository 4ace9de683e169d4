"""An observer of your own: told when each call starts and ends, on every transport.

    python examples/observer.py

An observer is any object with ``call_started(record)`` and ``call_ended(record, token)``;
whatever ``call_started`` returns comes back as ``token``. One that raises is logged with the
call's id and never fails the call.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from grpc_serverfn import CallRecord, Registry
from grpc_serverfn.testing import run_in_thread

fns = Registry()


@fns.server_fn
async def countdown(data: int) -> AsyncIterator[int]:
    """Count down from `data` to 1."""
    for i in range(data, 0, -1):
        yield i


class SlowCalls:
    """Keeps the calls that took longer than ``threshold`` seconds, by function."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.slow: list[str] = []
        self.seen = 0

    def call_started(self, record: CallRecord) -> float:
        return time.monotonic()

    def call_ended(self, record: CallRecord, token: Any) -> None:
        self.seen += 1
        if time.monotonic() - token > self.threshold:
            self.slow.append(f"{record.function} {record.code.name} call {record.call_id}")


def main() -> None:
    watcher = SlowCalls(threshold=0.0)  # every call is "slow" here, to show the output
    with run_in_thread(fns, observers=[watcher]) as server, server.client() as client:
        print(list(client.invoke("countdown", 3)))
    print(f"{watcher.seen} call(s) seen; slow: {', '.join(watcher.slow)}")


if __name__ == "__main__":
    main()
