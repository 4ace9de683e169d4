"""OpenTelemetry traces: the clients send the caller's trace context, the server makes one
SERVER span per call as its child, named after the function and recording how the call ended,
and the spans a handler makes are children of that span. Spans are read back from the SDK's
in-memory exporter (in-process servers) or the console exporter's lines (``serve --trace``)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from opentelemetry import propagate
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Span, SpanKind, StatusCode, format_span_id, format_trace_id

from grpc_serverfn import (
    Client,
    Context,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    NotFound,
    Registry,
)
from grpc_serverfn.testing import RunningServer, run_in_thread
from grpc_serverfn.tracing import OpenTelemetryTracing
from tests.processes import PROMPTLY, ROOT, server_env, serving
from tests.test_web import client_for, collect, request

# A provider of the tests' own, handed to the observer: the global one can be set only once.
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
tracer = provider.get_tracer(__name__)

fns = Registry()


@fns.server_fn
async def count(data: int) -> AsyncIterator[int]:
    for i in range(data):
        yield i


@fns.server_fn
async def crash(data: int) -> AsyncIterator[int]:
    for i in range(data):
        yield i
    raise RuntimeError("an unexpected bug")


@fns.server_fn
async def refuse(data: str) -> int:
    raise FailedPrecondition(data)


@fns.server_fn
async def forever() -> AsyncIterator[int]:
    while True:
        yield 0
        await asyncio.sleep(0.01)


@fns.server_fn
async def traceparent(ctx: Context) -> str | None:
    """The traceparent metadata the call arrived with."""
    return ctx.metadata.get("traceparent")


@fns.server_fn
async def work_async() -> AsyncIterator[str]:
    with tracer.start_as_current_span("work"):
        await asyncio.sleep(0)
        yield "done"


@fns.server_fn
def work_sync() -> str:
    with tracer.start_as_current_span("work"):  # in a worker thread
        return "done"


@fns.server_fn
def work_sync_generator() -> Iterator[str]:
    # Across yields, in whichever worker threads the chunks are made in.
    with tracer.start_as_current_span("work"):
        yield "one"
        yield "two"


@fns.server_fn(resumable=True)
async def ticks(data: int) -> AsyncIterator[int]:
    for i in range(data):
        yield i


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    """The app on a gRPC port and a web port, traced."""
    tracing = OpenTelemetryTracing(tracer_provider=provider)
    with run_in_thread(fns, web_port=0, observers=[tracing]) as running:
        yield running


@pytest.fixture(autouse=True)
def _no_spans_yet() -> None:
    exporter.clear()


def server_spans(function: str, count: int = 1) -> list[ReadableSpan]:
    """The server spans of calls of ``function``, once ``count`` of them have ended."""
    deadline = time.monotonic() + PROMPTLY
    while True:
        spans = [
            span
            for span in exporter.get_finished_spans()
            if span.kind is SpanKind.SERVER
            and (span.attributes or {}).get("serverfn.function") == function
        ]
        if len(spans) >= count or time.monotonic() > deadline:
            return spans
        time.sleep(0.01)


def one_server_span(function: str) -> ReadableSpan:
    [span] = server_spans(function)
    return span


def assert_child_of(span: ReadableSpan, parent: Span | ReadableSpan) -> None:
    parent_context = parent.get_span_context()
    assert parent_context is not None
    assert span.parent is not None, f"{span.name} has no parent"
    assert span.context is not None
    assert span.context.trace_id == parent_context.trace_id
    assert span.parent.span_id == parent_context.span_id


def test_the_server_span_is_a_child_of_the_blocking_callers_span(server: RunningServer) -> None:
    with server.client() as client, tracer.start_as_current_span("caller") as caller:
        assert list(client.invoke("count", 3)) == [0, 1, 2]
    span = one_server_span("count")
    assert_child_of(span, caller)
    assert span.parent is not None
    assert span.parent.is_remote  # it came over the wire, in the traceparent
    assert span.name == "serverfn.v1.ServerFunctions/Invoke count"
    assert span.kind is SpanKind.SERVER
    attributes = dict(span.attributes or {})
    assert attributes["rpc.system"] == "grpc"
    assert attributes["serverfn.protocol"] == "grpc"
    assert attributes["rpc.service"] == "serverfn.v1.ServerFunctions"
    assert attributes["rpc.method"] == "Invoke"
    assert attributes["rpc.grpc.status_code"] == 0
    assert attributes["serverfn.function"] == "count"
    assert attributes["serverfn.chunks"] == 3
    assert 1 <= int(attributes["serverfn.messages"]) <= 3  # coalesced, maybe
    assert attributes["serverfn.cancelled"] is False
    assert attributes["serverfn.resumed"] is False
    assert str(attributes["serverfn.call_id"])
    assert attributes["network.peer.address"] == "127.0.0.1"
    assert span.status.status_code is StatusCode.UNSET
    assert "error.type" not in attributes


@pytest.mark.parametrize(
    ("wire", "system"), [("connect-json", "connect_rpc"), ("grpc-web-proto", "grpc")]
)
async def test_a_web_call_is_traced_as_a_child_of_the_traceparent_header(
    server: RunningServer, wire: str, system: str
) -> None:
    """The web port's calls: the same span, under the protocol's name, parented by the W3C
    ``traceparent`` request header that browsers' OpenTelemetry sends."""
    protocol = "connect" if system == "connect_rpc" else "grpc-web"
    async with client_for(server.web_url, wire) as client:
        with tracer.start_as_current_span("browser") as caller:
            headers: dict[str, str] = {}
            propagate.inject(headers)
            assert "traceparent" in headers
            chunks, error = await collect(client, request("count", 2), headers=headers)
            assert (len(chunks), error) == (2, None)
            _, refused = await collect(client, request("refuse", "no"), headers=headers)
            assert refused is not None
    span = one_server_span("count")
    assert_child_of(span, caller)
    assert span.name == "serverfn.v1.ServerFunctions/Invoke count"
    attributes = dict(span.attributes or {})
    assert attributes["rpc.system"] == system
    assert attributes["serverfn.protocol"] == protocol
    assert attributes["rpc.grpc.status_code"] == 0
    assert attributes["serverfn.chunks"] == 2
    assert attributes["network.peer.address"] == "127.0.0.1"
    assert "rpc.connect_rpc.error_code" not in attributes
    failed = one_server_span("refuse")
    assert_child_of(failed, caller)
    failed_attributes = dict(failed.attributes or {})
    assert failed_attributes["rpc.grpc.status_code"] == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    if protocol == "connect":
        assert failed_attributes["rpc.connect_rpc.error_code"] == "failed_precondition"
    else:
        assert "rpc.connect_rpc.error_code" not in failed_attributes
    assert failed.status.status_code is StatusCode.UNSET  # the caller's mistake


async def test_the_server_span_is_a_child_of_the_async_callers_span(server: RunningServer) -> None:
    async with server.async_client() as client:
        with tracer.start_as_current_span("caller") as caller:
            assert [chunk async for chunk in client.invoke("count", 2)] == [0, 1]
            assert await client.call("count", 1) == 0
    spans = server_spans("count", 2)
    assert len(spans) == 2
    for span in spans:
        assert_child_of(span, caller)
    assert sorted(span.attributes["serverfn.chunks"] for span in spans if span.attributes) == [1, 2]


def test_an_unexpected_error_is_an_error_span_naming_the_call(server: RunningServer) -> None:
    with server.client() as client, pytest.raises(Internal) as raised:
        list(client.invoke("crash", 2))
    span = one_server_span("crash")
    attributes = dict(span.attributes or {})
    assert attributes["rpc.grpc.status_code"] == grpc.StatusCode.INTERNAL.value[0]
    assert attributes["error.type"] == "INTERNAL"
    assert attributes["serverfn.chunks"] == 2  # the chunks before the error
    assert span.status.status_code is StatusCode.ERROR
    # The caller's message, which names the call an operator finds the traceback under.
    assert span.status.description == raised.value.message
    assert f"(call {attributes['serverfn.call_id']})" in raised.value.message


def test_a_callers_mistake_is_recorded_but_not_a_server_error(server: RunningServer) -> None:
    with server.client() as client:
        with pytest.raises(FailedPrecondition):
            client.call("refuse", "not now")
        with pytest.raises(NotFound):
            client.call("no_such_function")
    refused = one_server_span("refuse")
    assert dict(refused.attributes or {})["rpc.grpc.status_code"] == 9
    assert refused.status.status_code is StatusCode.UNSET
    unknown = one_server_span("(unknown)")  # bounded: not the name the caller sent
    assert unknown.name == "serverfn.v1.ServerFunctions/Invoke (unknown)"
    assert dict(unknown.attributes or {})["rpc.grpc.status_code"] == 5
    assert unknown.status.status_code is StatusCode.UNSET


def test_a_cancelled_call_has_one_span_recording_the_cancel(server: RunningServer) -> None:
    with server.client() as client, tracer.start_as_current_span("caller") as caller:
        stream = client.invoke("forever")
        assert next(stream) == 0
        stream.cancel()
    span = one_server_span("forever")
    assert_child_of(span, caller)
    attributes = dict(span.attributes or {})
    assert attributes["serverfn.cancelled"] is True
    assert attributes["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]
    assert int(attributes["serverfn.chunks"]) >= 1
    assert span.status.status_code is StatusCode.UNSET  # the caller's choice, not a failure
    time.sleep(0.2)  # nothing more turns up for the call later
    assert len(server_spans("forever")) == 1


def test_a_passed_deadline_is_an_error_span(server: RunningServer) -> None:
    with server.client() as client, pytest.raises(DeadlineExceeded):
        list(client.invoke("forever", timeout=0.3))
    span = one_server_span("forever")
    attributes = dict(span.attributes or {})
    assert attributes["serverfn.cancelled"] is True
    assert attributes["rpc.grpc.status_code"] == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert attributes["error.type"] == "DEADLINE_EXCEEDED"
    assert span.status.status_code is StatusCode.ERROR


@pytest.mark.parametrize("function", ["work_async", "work_sync", "work_sync_generator"])
def test_spans_a_handler_makes_are_children_of_the_server_span(
    server: RunningServer, function: str
) -> None:
    with server.client() as client, tracer.start_as_current_span("caller") as caller:
        assert list(client.invoke(function))[-1] in ("done", "two")
    span = one_server_span(function)
    assert_child_of(span, caller)
    [work] = [span for span in exporter.get_finished_spans() if span.name == "work"]
    assert_child_of(work, span)


def test_a_resumed_stream_is_marked_resumed(server: RunningServer) -> None:
    with server.client() as client:
        stream = client.invoke("ticks", 3)
        stream_id = stream.stream_id()
        assert stream_id is not None
        assert list(stream) == [0, 1, 2]
        assert list(client.resume(stream_id, 1, function="ticks")) == [1, 2]
    first, resumed = sorted(
        server_spans("ticks", 2), key=lambda span: bool((span.attributes or {})["serverfn.resumed"])
    )
    assert (first.attributes or {})["serverfn.chunks"] == 3
    assert (resumed.attributes or {})["serverfn.resumed"] is True
    assert (resumed.attributes or {})["serverfn.chunks"] == 2


@pytest.mark.parametrize("kind", ["blocking", "async"])
async def test_no_traceparent_is_sent_without_a_current_span(
    server: RunningServer, kind: str
) -> None:
    if kind == "blocking":
        with server.client() as client:
            sent = client.call("traceparent")
    else:
        async with server.async_client() as client:
            sent = await client.call("traceparent")
    assert sent is None
    assert one_server_span("traceparent").parent is None  # a trace of its own


def test_the_traceparent_sent_names_the_current_span(server: RunningServer) -> None:
    with server.client() as client, tracer.start_as_current_span("caller") as caller:
        sent = client.call("traceparent")
        # One the caller set itself is kept.
        own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        kept = client.call("traceparent", metadata={"traceparent": own})
    context = caller.get_span_context()
    ids = f"{format_trace_id(context.trace_id)}-{format_span_id(context.span_id)}"
    assert sent == f"00-{ids}-{context.trace_flags:02x}"
    assert kept == own


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=PROMPTLY,
        check=False,
    )


def test_serving_and_calling_never_import_opentelemetry_unless_tracing() -> None:
    result = run_python(
        """
        import sys
        from grpc_serverfn.testing import run_in_thread
        from tests import app
        with run_in_thread(app.fns) as server, server.client() as client:
            assert client.call("echo_async", 1) == 1
        print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_without_opentelemetry_calls_work_and_tracing_says_what_to_install() -> None:
    result = run_python(
        """
        import sys
        sys.modules["opentelemetry"] = None  # as if it were not installed
        from grpc_serverfn import Context, Registry
        from grpc_serverfn.testing import run_in_thread
        fns = Registry()

        @fns.server_fn
        async def traceparent(ctx: Context) -> str | None:
            return ctx.metadata.get("traceparent")

        with run_in_thread(fns) as server, server.client() as client:
            print("sent:", client.call("traceparent"))
        try:
            import grpc_serverfn.tracing
        except ImportError as error:
            print("import:", error)
        from grpc_serverfn.cli import main
        sys.exit(main(["serve", "--trace", "--port", "0", "tests.app:fns"]))
        """
    )
    assert result.returncode == 2, result.stderr
    assert "sent: None" in result.stdout
    assert "import: grpc_serverfn.tracing needs OpenTelemetry: pip install" in result.stdout
    assert "'grpc-serverfn[otel]'" in result.stdout
    assert "grpc-serverfn: error: --trace needs OpenTelemetry" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_trace_exports_spans_through_the_sdk_the_app_configured() -> None:
    with serving("--port", "0", "--trace", "tests.tracing_app:fns") as process:
        with (
            Client(process.wait_serving()) as client,
            tracer.start_as_current_span("caller") as caller,
        ):
            assert list(client.invoke("greet", "you")) == ["hello", "you"]
        spans = {
            span["name"]: span
            for span in (
                json.loads(process.wait_for_line(rf'"name": "{name}"'))
                for name in ("serverfn.v1.ServerFunctions/Invoke greet", "compose")
            )
        }
    context = caller.get_span_context()
    served = spans["serverfn.v1.ServerFunctions/Invoke greet"]
    assert served["kind"] == "SpanKind.SERVER"
    assert served["context"]["trace_id"] == f"0x{format_trace_id(context.trace_id)}"
    assert served["parent_id"] == f"0x{format_span_id(context.span_id)}"
    assert served["attributes"]["serverfn.chunks"] == 2
    assert served["attributes"]["rpc.grpc.status_code"] == 0
    assert spans["compose"]["parent_id"] == served["context"]["span_id"]


def test_serve_trace_warns_when_no_sdk_is_configured() -> None:
    with serving("--port", "0", "--trace", "tests.app:fns") as process:
        with Client(process.wait_serving()) as client:
            assert client.call("echo_async", 1) == 1
        process.wait_for_line("tracing is on, but no OpenTelemetry SDK is configured")


def test_span_ends_wait_for_their_batch_keep_their_time_and_are_all_ended_at_stop() -> None:
    # A minute's delay: nothing but the server's stop can end these spans.
    tracing = OpenTelemetryTracing(tracer_provider=provider, delay=60)
    with run_in_thread(fns, observers=[tracing]) as running:
        before = time.time_ns()
        with running.client() as client, tracer.start_as_current_span("caller") as caller:
            assert list(client.invoke("count", 3)) == [0, 1, 2]
        after = time.time_ns()
        time.sleep(0.3)
        assert server_spans("count", 0) == []
    [span] = server_spans("count")
    assert_child_of(span, caller)
    assert span.end_time is not None
    assert before <= span.end_time <= after  # the call's end, not the batch's
    assert (span.attributes or {})["serverfn.chunks"] == 3
