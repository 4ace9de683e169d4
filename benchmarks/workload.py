"""The work every benchmark server does: stream ``count`` chunks of about ``size`` bytes of JSON.

The baseline and grpclib servers send :func:`payload` (JSON text built once per size); the
grpc-serverfn app yields ``{"i": i, "pad": pad(size)}``, which encodes to about the same size.

The chat scenario's streams are paced instead: token ``i`` of a stream is due ``i`` intervals
after the handler started, on the server's own clock (each handler sleeps until the next due
time, so lateness does not accumulate), and carries its due time on the wall clock in µs
(:func:`wall_us`) for the client, on the same machine, to compute how late it arrived.
"""

from __future__ import annotations

import functools
import time

__all__ = ["CHUNK_BYTES", "IDLE_SECONDS", "TOKEN_TEXT", "pad", "payload", "wall_us"]

CHUNK_BYTES = 64
"""The default chunk size: about 64 bytes of JSON."""

IDLE_SECONDS = 3600.0
"""How long an idle stream's handler waits after its first chunk (the caller cancels it)."""

TOKEN_TEXT = "tok-" + "x" * 16
"""A chat token's text: 20 bytes."""

_ENVELOPE = len('{"i":0,"pad":""}')


@functools.cache
def pad(size: int) -> str:
    """The padding that makes ``{"i":0,"pad":PAD}`` about ``size`` bytes long."""
    return "x" * max(0, size - _ENVELOPE)


@functools.cache
def payload(size: int) -> str:
    """The pre-encoded JSON chunk of about ``size`` bytes: ``{"i":0,"pad":"xx..."}``."""
    return f'{{"i":0,"pad":"{pad(size)}"}}'


def wall_us() -> int:
    """Now on the wall clock, in µs since the Unix epoch: what every process on the machine
    reads alike (the chat scenario's due times and arrival times)."""
    return time.time_ns() // 1000
