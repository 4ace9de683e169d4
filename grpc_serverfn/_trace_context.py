"""The current OpenTelemetry trace context as call metadata, for the clients to send.

A span can only be current once the application has imported ``opentelemetry.trace``, so
until then this is one dictionary lookup per call and imports nothing: processes that do not
trace (or do not have OpenTelemetry installed) never load it. Once the application has, its
functions are looked up once and the context goes out through the global propagator (W3C
``traceparent``/``tracestate`` by default, or whatever ``OTEL_PROPAGATORS`` names).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ["MetadataItems", "trace_metadata"]

MetadataItems = tuple[tuple[str, str | bytes], ...]

_inject: Callable[[], MetadataItems] | None = None


def trace_metadata() -> MetadataItems:
    """The metadata carrying the current span's trace context; empty without a valid span."""
    inject = _inject
    if inject is None:
        if "opentelemetry.trace" not in sys.modules:
            return ()
        inject = _resolve()
    return inject()


def _resolve() -> Callable[[], MetadataItems]:
    global _inject
    from opentelemetry import propagate, trace

    current_span = trace.get_current_span
    propagator_inject = propagate.inject

    def inject() -> MetadataItems:
        if not current_span().get_span_context().is_valid:
            return ()
        carrier: dict[str, str] = {}
        propagator_inject(carrier)
        return tuple(carrier.items())

    _inject = inject
    return inject
