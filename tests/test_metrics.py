"""Prometheus metrics per server function: real calls against a real server, then a real scrape
of its HTTP endpoint, parsed as Prometheus parses it, with the exact counts asserted."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import socket
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from grpc_serverfn import (
    AsyncClient,
    Client,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    Limits,
    NotFound,
)
from grpc_serverfn._proto.serverfn.v1 import serverfn_pb2, serverfn_pb2_grpc
from grpc_serverfn.metrics import MetricsEndpoint, PrometheusMetrics
from grpc_serverfn.observe import PROTOCOLS, UNKNOWN_FUNCTION
from grpc_serverfn.testing import RunningServer, run_in_loop, run_in_thread
from tests import app
from tests.processes import PROMPTLY, ServerProcess, serving
from tests.test_web import client_for, collect, request

CONSTANT = {
    "grpc_type": "server_stream",
    "grpc_service": "serverfn.v1.ServerFunctions",
    "grpc_method": "Invoke",
    "protocol": "grpc",  # a call's own label, but most tests make gRPC calls only
}
ENDPOINT = re.compile(r"serving Prometheus metrics on (http://127\.0\.0\.1:(\d+)/metrics)")


class Scrape:
    """One scrape of an endpoint: its text, and every sample by name and labels."""

    def __init__(self, url: str) -> None:
        with urllib.request.urlopen(url, timeout=PROMPTLY) as response:
            assert response.status == 200
            self.content_type = response.headers["Content-Type"]
            self.text = response.read().decode()
        self.families = {f.name: f for f in text_string_to_metric_families(self.text)}
        self.samples = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in self.families.values()
            for sample in family.samples
        }

    def value(self, name: str, function: str, **labels: str) -> float:
        """The sample ``name`` of ``function`` (with the constant gRPC labels, protocol
        ``grpc`` unless ``labels`` says otherwise, and ``labels``)."""
        key = (name, frozenset({**CONSTANT, "function": function, **labels}.items()))
        assert key in self.samples, f"no sample {name} {labels} for {function!r} in:\n{self.text}"
        return self.samples[key]

    def handled(self, function: str, protocol: str = "grpc") -> dict[str, float]:
        """The non-zero ``grpc_server_handled_total`` of ``function``, by code."""
        codes = {
            code.name: self.value(
                "grpc_server_handled_total", function, grpc_code=code.name, protocol=protocol
            )
            for code in grpc.StatusCode
        }
        return {code: count for code, count in codes.items() if count}


def scrape_until(url: str, ready: Callable[[Scrape], bool]) -> Scrape:
    """Scrape until ``ready`` says so: a call's end is counted right after its status is sent."""
    deadline = time.monotonic() + PROMPTLY
    while True:
        scrape = Scrape(url)
        if ready(scrape) or time.monotonic() > deadline:
            return scrape
        time.sleep(0.02)


class Metered:
    """The test app served with a PrometheusMetrics observer, and its endpoint."""

    def __init__(self, server: RunningServer, endpoint: MetricsEndpoint) -> None:
        self.server = server
        self.endpoint = endpoint

    def scrape(self, ready: Callable[[Scrape], bool] = lambda scrape: True) -> Scrape:
        return scrape_until(self.endpoint.url, ready)

    def settled(self, function: str, calls: int) -> Scrape:
        """A scrape once ``calls`` calls of ``function`` have ended and none is in flight."""

        def done(scrape: Scrape) -> bool:
            return (
                sum(scrape.handled(function).values()) >= calls
                and scrape.value("serverfn_streams_in_flight", function) == 0
            )

        return self.scrape(done)


@pytest.fixture
def metered() -> Iterator[Metered]:
    metrics = PrometheusMetrics(app.fns)
    endpoint = MetricsEndpoint(metrics.registry, port=0)
    try:
        with run_in_thread(app.fns, observers=[metrics]) as server:
            yield Metered(server, endpoint)
    finally:
        endpoint.close()


def test_every_function_has_zeroed_series_before_any_call(metered: Metered) -> None:
    scrape = metered.scrape()
    assert scrape.content_type.startswith("text/plain")
    for function in [*(f.name for f in app.fns), UNKNOWN_FUNCTION]:
        assert scrape.value("grpc_server_started_total", function) == 0
        assert scrape.handled(function) == {}
        assert scrape.value("grpc_server_handled_total", function, grpc_code="OK") == 0
        assert scrape.value("grpc_server_msg_sent_total", function) == 0
        assert scrape.value("grpc_server_handling_seconds_count", function) == 0
        assert scrape.value("serverfn_first_chunk_seconds_count", function) == 0
        assert scrape.value("serverfn_streams_in_flight", function) == 0
        assert scrape.value("serverfn_calls_cancelled_total", function) == 0
        assert scrape.value("serverfn_chunks_coalesced_total", function) == 0
        for reason in ("SERVER_AT_CAPACITY", "SERVER_SHUTTING_DOWN"):
            assert scrape.value("serverfn_calls_refused_total", function, reason=reason) == 0
    assert scrape.families["grpc_server_handling_seconds"].type == "histogram"
    assert scrape.families["serverfn_streams_in_flight"].type == "gauge"
    assert "Chunks sent" in scrape.families["grpc_server_msg_sent"].documentation


def test_a_stream_of_seven_chunks_counts_one_call_and_seven_chunks(metered: Metered) -> None:
    with Client(metered.server.target, coalesce=False) as client:
        assert list(client.invoke("count_async", {"n": 7})) == list(range(7))
        assert client.call("echo_sync", "hi") == "hi"
    scrape = metered.settled("count_async", 1)
    assert scrape.value("grpc_server_started_total", "count_async") == 1
    assert scrape.handled("count_async") == {"OK": 1}
    assert scrape.value("grpc_server_msg_sent_total", "count_async") == 7
    assert scrape.value("serverfn_chunks_coalesced_total", "count_async") == 0
    assert scrape.value("serverfn_calls_cancelled_total", "count_async") == 0
    assert scrape.value("serverfn_streams_in_flight", "count_async") == 0
    for histogram in ("grpc_server_handling_seconds", "serverfn_first_chunk_seconds"):
        assert scrape.value(f"{histogram}_count", "count_async") == 1
        assert scrape.value(f"{histogram}_bucket", "count_async", le="+Inf") == 1
        assert 0 < scrape.value(f"{histogram}_sum", "count_async") < PROMPTLY
    # The other call is its function's own.
    assert scrape.value("grpc_server_started_total", "echo_sync") == 1
    assert scrape.value("grpc_server_msg_sent_total", "echo_sync") == 1
    assert scrape.value("grpc_server_started_total", "count_sync") == 0


def test_errors_are_counted_by_their_status_code(metered: Metered) -> None:
    with Client(metered.server.target) as client:
        with pytest.raises(FailedPrecondition):
            list(client.invoke("fail_after", {"n": 3}))
        with pytest.raises(FailedPrecondition):
            list(client.invoke("fail_after", {"n": 0}))
        with pytest.raises(InvalidArgument):
            client.call("raise_invalid")
    scrape = metered.settled("raise_invalid", 1)
    scrape = metered.settled("fail_after", 2)
    assert scrape.value("grpc_server_started_total", "fail_after") == 2
    assert scrape.handled("fail_after") == {"FAILED_PRECONDITION": 2}
    assert scrape.value("grpc_server_msg_sent_total", "fail_after") == 3
    assert scrape.value("grpc_server_handling_seconds_count", "fail_after") == 2
    # Only the call that sent a chunk has a time to first chunk.
    assert scrape.value("serverfn_first_chunk_seconds_count", "fail_after") == 1
    assert scrape.handled("raise_invalid") == {"INVALID_ARGUMENT": 1}
    assert scrape.value("serverfn_first_chunk_seconds_count", "raise_invalid") == 0
    assert scrape.value("serverfn_calls_cancelled_total", "fail_after") == 0


def test_a_cancelled_stream_is_in_flight_then_counted_as_cancelled(metered: Metered) -> None:
    probe = f"metrics-{uuid.uuid4().hex}"
    with Client(metered.server.target, coalesce=False) as client:
        stream = client.invoke("wait_async", {"probe": probe, "chunks": 2, "seconds": 60})
        assert [next(stream), next(stream)] == [0, 1]
        assert app.probe(probe).waiting.wait(PROMPTLY)
        during = metered.scrape()
        assert during.value("serverfn_streams_in_flight", "wait_async") == 1
        assert during.value("grpc_server_started_total", "wait_async") == 1
        assert during.handled("wait_async") == {}
        stream.cancel()
        assert app.probe(probe).cleaned_up.wait(PROMPTLY)
    scrape = metered.settled("wait_async", 1)
    assert scrape.handled("wait_async") == {"CANCELLED": 1}
    assert scrape.value("serverfn_calls_cancelled_total", "wait_async") == 1
    assert scrape.value("serverfn_streams_in_flight", "wait_async") == 0
    assert scrape.value("grpc_server_msg_sent_total", "wait_async") == 2
    assert scrape.value("grpc_server_handling_seconds_count", "wait_async") == 1


def test_a_call_past_its_deadline_counts_as_cancelled_too(metered: Metered) -> None:
    probe = f"metrics-{uuid.uuid4().hex}"
    with Client(metered.server.target) as client, pytest.raises(DeadlineExceeded):
        list(client.invoke("wait_async", {"probe": probe, "seconds": 60}, timeout=0.5))
    scrape = metered.settled("wait_async", 1)
    assert scrape.handled("wait_async") == {"DEADLINE_EXCEEDED": 1}
    assert scrape.value("serverfn_calls_cancelled_total", "wait_async") == 1


def test_calls_refused_at_capacity_are_counted_as_refused() -> None:
    metrics = PrometheusMetrics(app.fns)
    endpoint = MetricsEndpoint(metrics.registry, port=0)
    probe = f"metrics-{uuid.uuid4().hex}"
    request = serverfn_pb2.InvokeRequest(function="echo_async", json='"x"')
    try:
        with (
            run_in_thread(
                app.fns, observers=[metrics], limits=Limits(max_concurrent_calls=1)
            ) as server,
            Client(server.target) as client,
            grpc.insecure_channel(server.target) as channel,
        ):
            stream = client.invoke("wait_async", {"probe": probe, "seconds": 60})
            assert next(stream) == 0
            stub = serverfn_pb2_grpc.ServerFunctionsStub(channel)  # type: ignore[no-untyped-call]
            for _ in range(3):
                with pytest.raises(grpc.RpcError) as refused:
                    list(stub.Invoke(request))  # a plain stub: not made again
                assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
            stream.cancel()
            scrape = scrape_until(endpoint.url, lambda s: bool(s.handled("echo_async")))
    finally:
        endpoint.close()
    assert scrape.handled("echo_async") == {"RESOURCE_EXHAUSTED": 3}
    refused_total = "serverfn_calls_refused_total"
    assert scrape.value(refused_total, "echo_async", reason="SERVER_AT_CAPACITY") == 3
    assert scrape.value(refused_total, "echo_async", reason="SERVER_SHUTTING_DOWN") == 0
    assert scrape.value(refused_total, "wait_async", reason="SERVER_AT_CAPACITY") == 0
    assert (
        "before running their function" in scrape.families["serverfn_calls_refused"].documentation
    )


def test_an_unknown_function_name_never_becomes_a_label(metered: Metered) -> None:
    name = f"no_such_{uuid.uuid4().hex}"
    with Client(metered.server.target) as client, pytest.raises(NotFound):
        client.call(name)
    scrape = metered.settled(UNKNOWN_FUNCTION, 1)
    assert scrape.value("grpc_server_started_total", UNKNOWN_FUNCTION) == 1
    assert scrape.handled(UNKNOWN_FUNCTION) == {"NOT_FOUND": 1}
    assert name not in scrape.text
    functions = {
        sample.labels["function"]
        for family in scrape.families.values()
        for sample in family.samples
        if "function" in sample.labels
    }
    assert functions == {*(f.name for f in app.fns), UNKNOWN_FUNCTION}


def test_chunks_packed_together_are_counted_as_coalesced(metered: Metered) -> None:
    request = serverfn_pb2.InvokeRequest(function="count_async", json='{"n": 20000}', max_batch=64)
    with grpc.insecure_channel(metered.server.target) as channel:
        stub = serverfn_pb2_grpc.ServerFunctionsStub(channel)  # type: ignore[no-untyped-call]
        messages = stub.Invoke(request)
        received = [next(messages)]
        time.sleep(0.3)  # the server's writes back up, so chunks pile up into batches
        received.extend(messages)
    chunks = sum(len(m.batch.json) if m.HasField("batch") else 1 for m in received)
    assert chunks == 20000
    assert len(received) < chunks, "nothing was packed although the reader paused"
    scrape = metered.settled("count_async", 1)
    assert scrape.value("grpc_server_msg_sent_total", "count_async") == 20000
    assert scrape.value("serverfn_chunks_coalesced_total", "count_async") == chunks - len(received)


def test_a_registry_passed_in_is_shared_with_the_applications_own_metrics() -> None:
    shared = CollectorRegistry()
    orders = Counter("shop_orders", "Orders placed.", registry=shared)
    metrics = PrometheusMetrics(["quote"], registry=shared)
    assert metrics.registry is shared
    orders.inc(3)
    text = generate_latest(shared).decode()
    assert "shop_orders_total 3.0" in text
    assert 'grpc_server_started_total{function="quote",grpc_method="Invoke"' in text
    assert 'protocol="grpc"' in text
    assert f'function="{UNKNOWN_FUNCTION}"' in text


def test_serve_metrics_port_0_logs_the_endpoint_and_counts_real_calls() -> None:
    with serving("tests.app:fns", "--port", "0", "--metrics-port", "0") as server:
        address = server.wait_serving()
        match = ENDPOINT.search(server.wait_for_line(ENDPOINT))
        assert match is not None
        url = match.group(1)
        assert int(match.group(2)) > 0
        with Client(address, coalesce=False) as client:
            assert list(client.invoke("count_sync", {"n": 4})) == [0, 1, 2, 3]
            with pytest.raises(NotFound):
                list(client.invoke("fail_after_sync", {"n": 2}))
        scrape = scrape_until(url, lambda s: sum(s.handled("fail_after_sync").values()) == 1)
        assert scrape.handled("count_sync") == {"OK": 1}
        assert scrape.value("grpc_server_msg_sent_total", "count_sync") == 4
        assert scrape.handled("fail_after_sync") == {"NOT_FOUND": 1}
        assert scrape.value("grpc_server_msg_sent_total", "fail_after_sync") == 2
        # A whole serving process also exports prometheus-client's process metrics.
        assert "process_resident_memory_bytes" in scrape.families
        assert "python_info" in scrape.families


def free_port_pair() -> int:
    """A port P with P and P+1 both free on 127.0.0.1 (as far as a bind can tell)."""
    for _ in range(100):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as second, contextlib.suppress(OSError):
                second.bind(("127.0.0.1", port + 1))
                return int(port)
    raise AssertionError("found no two free ports in a row")


def test_each_worker_serves_its_own_metrics_on_port_plus_its_index() -> None:
    base = free_port_pair()
    args = ("--workers", "2", "--metrics-port", str(base))
    with serving("tests.app:fns", "--port", "0", *args) as server:
        announced = server.wait_for_line(r"2 worker processes serving on (127\.0\.0\.1:\d+)")
        address = re.search(r"127\.0\.0\.1:\d+", announced)
        assert address is not None
        endpoints = {}  # worker pid: its metrics URL
        ports = []
        for line in server.lines:
            found = re.search(r"\[(\d+)\]: worker (\d) " + ENDPOINT.pattern, line)
            if found:
                endpoints[int(found.group(1))] = found.group(3)
                ports.append(int(found.group(4)))
                assert int(found.group(4)) == base + int(found.group(2))
        assert sorted(ports) == [base, base + 1], server.log
        with Client(address.group(0), timeout=PROMPTLY, channels=16) as client:
            served = collections.Counter(client.call("pid") for _ in range(48))
        assert set(served) <= set(endpoints), (served, endpoints)
        for pid, url in endpoints.items():
            scrape = Scrape(url)  # the calls ended before their answers came back
            assert scrape.value("grpc_server_started_total", "pid") == served[pid]
            assert scrape.value("grpc_server_handled_total", "pid", grpc_code="OK") == served[pid]


def test_serve_metrics_usage_errors_are_clear() -> None:
    def run(*args: str) -> ServerProcess:
        process = ServerProcess("tests.app:fns", *args)
        assert process.wait(PROMPTLY) == 2, process.log
        return process

    clash = run("--port", "9101", "--metrics-port", "9100", "--workers", "2")
    assert "--metrics-port takes ports 9100-9101, which holds --port 9101" in clash.log
    same = run("--port", "9100", "--metrics-port", "9100")
    assert "--metrics-port takes port 9100, which holds --port 9100" in same.log
    alone = run("--port", "0", "--metrics-host", "0.0.0.0")
    assert "--metrics-host needs --metrics-port" in alone.log
    bad = run("--port", "0", "--metrics-port", "70000")
    assert "expected a port number (0 to 65535), not '70000'" in bad.log
    for process in (clash, same, alone, bad):
        assert "Traceback" not in process.log


def test_a_metrics_port_in_use_fails_to_start_with_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = ServerProcess("tests.app:fns", "--port", "0", "--metrics-port", str(port))
        assert process.wait(PROMPTLY) == 1, process.log
    assert f"grpc-serverfn: error: cannot serve metrics on 127.0.0.1:{port}" in process.log
    assert "Traceback" not in process.log
    assert "grpc-serverfn serving" not in process.log


# --- the web port: metrics labelled by protocol ----------------------------------------------


async def test_calls_on_both_ports_are_counted_by_their_protocol() -> None:
    """``serve --web-port --metrics-port``: every protocol's series at 0 before any call, then
    calls over gRPC, Connect and gRPC-Web, each counted under its own protocol."""
    args = ("--port", "0", "--web-port", "0", "--metrics-port", "0")
    with serving("tests.app:fns", *args) as server:
        address = await asyncio.to_thread(server.wait_serving)
        web_url = await asyncio.to_thread(server.wait_web_serving)
        endpoint = ENDPOINT.search(await asyncio.to_thread(server.wait_for_line, ENDPOINT))
        assert endpoint is not None
        url = endpoint.group(1)

        before = await asyncio.to_thread(Scrape, url)
        for protocol in PROTOCOLS:
            for function in ("count_async", UNKNOWN_FUNCTION):
                labels = {"protocol": protocol}
                assert before.value("grpc_server_started_total", function, **labels) == 0
                assert before.value("serverfn_streams_in_flight", function, **labels) == 0
                assert before.handled(function, protocol) == {}

        async with AsyncClient(address, coalesce=False) as grpc_client:
            assert [c async for c in grpc_client.invoke("count_async", {"n": 3})] == [0, 1, 2]
        for wire, n in (("connect-json", 2), ("grpc-web-proto", 4)):
            async with client_for(web_url, wire) as client:
                chunks, error = await collect(client, request("count_async", {"n": n}))
                assert (len(chunks), error) == (n, None)
                _, error = await collect(client, request("no_such_function"))
                assert error is not None

        def settled(scrape: Scrape) -> bool:
            return sum(scrape.handled(UNKNOWN_FUNCTION, "grpc-web").values()) == 1

        scrape = await asyncio.to_thread(scrape_until, url, settled)
    for protocol, chunks in (("grpc", 3), ("connect", 2), ("grpc-web", 4)):
        labels = {"protocol": protocol}
        assert scrape.value("grpc_server_started_total", "count_async", **labels) == 1
        assert scrape.handled("count_async", protocol) == {"OK": 1}
        assert scrape.value("grpc_server_msg_sent_total", "count_async", **labels) == chunks
        assert scrape.value("grpc_server_handling_seconds_count", "count_async", **labels) == 1
        assert scrape.value("serverfn_first_chunk_seconds_count", "count_async", **labels) == 1
        assert scrape.value("serverfn_streams_in_flight", "count_async", **labels) == 0
        unknown = scrape.handled(UNKNOWN_FUNCTION, protocol)
        assert unknown == ({} if protocol == "grpc" else {"NOT_FOUND": 1})
    assert {
        sample.labels["protocol"]
        for family in scrape.families.values()
        for sample in family.samples
        if "protocol" in sample.labels
    } == set(PROTOCOLS)


async def test_a_protocol_not_asked_for_is_counted_in_series_made_at_its_first_call() -> None:
    metrics = PrometheusMetrics(app.fns)  # protocols: grpc only
    endpoint = MetricsEndpoint(metrics.registry, port=0)
    try:
        async with run_in_loop(app.fns, web_port=0, observers=[metrics]) as running:
            before = await asyncio.to_thread(Scrape, endpoint.url)
            assert 'protocol="connect"' not in before.text
            assert before.value("grpc_server_started_total", "count_async") == 0
            async with client_for(running.web_url) as client:
                chunks, error = await collect(client, request("count_async", {"n": 2}))
            assert (len(chunks), error) == (2, None)
            after = await asyncio.to_thread(Scrape, endpoint.url)
    finally:
        endpoint.close()
    connect = {"protocol": "connect"}
    assert after.value("grpc_server_started_total", "count_async", **connect) == 1
    assert after.handled("count_async", "connect") == {"OK": 1}
    assert after.value("grpc_server_msg_sent_total", "count_async", **connect) == 2
    assert after.value("grpc_server_started_total", "count_async") == 0  # gRPC's own, apart
    assert "grpc-web" not in after.text


def test_protocols_are_the_known_few() -> None:
    assert PROTOCOLS == ("grpc", "connect", "grpc-web")
    with pytest.raises(ValueError, match=r"PrometheusMetrics\.protocols .*\['http'\]"):
        PrometheusMetrics(app.fns, protocols=["grpc", "http"])
