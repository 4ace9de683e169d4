"""The work every benchmark server does: stream ``count`` chunks of about ``size`` bytes of JSON.

The baseline and grpclib servers send :func:`payload` (JSON text built once per size); the
grpc-serverfn app yields ``{"i": i, "pad": pad(size)}``, which encodes to about the same size.
"""

from __future__ import annotations

import functools

__all__ = ["CHUNK_BYTES", "IDLE_SECONDS", "pad", "payload"]

CHUNK_BYTES = 64
"""The default chunk size: about 64 bytes of JSON."""

IDLE_SECONDS = 3600.0
"""How long an idle stream's handler waits after its first chunk (the caller cancels it)."""

_ENVELOPE = len('{"i":0,"pad":""}')


@functools.cache
def pad(size: int) -> str:
    """The padding that makes ``{"i":0,"pad":PAD}`` about ``size`` bytes long."""
    return "x" * max(0, size - _ENVELOPE)


@functools.cache
def payload(size: int) -> str:
    """The pre-encoded JSON chunk of about ``size`` bytes: ``{"i":0,"pad":"xx..."}``."""
    return f'{{"i":0,"pad":"{pad(size)}"}}'
