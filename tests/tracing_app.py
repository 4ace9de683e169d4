"""What ``grpc-serverfn serve --trace tests.tracing_app:fns`` serves in tests/test_tracing.py:
an app that configures the OpenTelemetry SDK in code, at import, printing every finished span
to stderr as one JSON line (the test reads them from the server's log)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from grpc_serverfn import Registry


def _one_line(span: ReadableSpan) -> str:
    return span.to_json(indent=None) + "\n"


provider = TracerProvider()
provider.add_span_processor(
    SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr, formatter=_one_line))
)
trace.set_tracer_provider(provider)
tracer = trace.get_tracer(__name__)

fns = Registry()


@fns.server_fn
async def greet(data: str) -> AsyncIterator[str]:
    """Greet ``data`` in two chunks, composing them in a span of its own."""
    with tracer.start_as_current_span("compose"):
        yield "hello"
        yield data
