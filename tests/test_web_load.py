"""The web port under load on one HTTP/2 connection: 1,000 concurrent Connect streams of 200
chunks, round after round, over h2c (HTTP/2 in clear text, prior knowledge) and over TLS (ALPN
h2), against a server process; every chunk arrives in order, no stream fails, every call came
over the one connection, and no handler is left running.

The client is the Connect project's own (connectrpc) on its HTTP client, pyqwest (Rust's
hyper): HTTP/2 only, one connection at most, so the server's limit on concurrent streams is what
the client meets. The streams coalesce their chunks (``max_batch``) to keep the suite quick;
run as a script, ``python -m tests.test_web_load``, it runs the full figure: one chunk per
message, five rounds, h2c and TLS (a few minutes each).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from connectrpc.compat import google_protobuf_binary_codec
from connectrpc.errors import ConnectError
from connectrpc.protocol import ProtocolType
from pyqwest import Client, HTTPTransport, HTTPVersion

from grpc_serverfn._proto.serverfn.v1 import serverfn_pb2 as pb
from grpc_serverfn._proto.serverfn.v1.serverfn_connect import ServerFunctionsClient
from tests.processes import ServerProcess, serving

STREAMS = 1_000
CHUNKS = 200
ROUNDS = 2
MAX_BATCH = 64

pytestmark = pytest.mark.load


Outcome = collections.Counter[str]


class WebServerProcess:
    def __init__(self, process: ServerProcess, url: str, ca: bytes | None) -> None:
        self.process = process
        self.url = url
        self.ca = ca


@contextlib.contextmanager
def web_server_process(transport: str, directory: Path) -> Iterator[WebServerProcess]:
    """The test app in a process of its own, its web port in clear text (``h2c``) or over
    TLS (``tls``, a certificate made in ``directory``)."""
    flags: list[str] = []
    ca_pem = None
    if transport == "tls":
        ca = trustme.CA()
        cert = ca.issue_cert("localhost", "127.0.0.1")
        chain, key = directory / "chain.pem", directory / "key.pem"
        chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(key))
        flags = ["--tls-cert", str(chain), "--tls-key", str(key)]
        ca_pem = ca.cert_pem.bytes()
    with serving("tests.app:fns", "--port", "0", "--web-port", "0", "--no-call-log", *flags) as s:
        yield WebServerProcess(s, s.wait_web_serving(), ca_pem)
        s.signal(signal.SIGTERM)
        assert s.wait(30) == 0, s.log


@pytest.fixture(scope="module", params=["h2c", "tls"])
def web_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebServerProcess]:
    with web_server_process(request.param, tmp_path_factory.mktemp("tls")) as server:
        yield server


def http2_only(ca: bytes | None) -> HTTPTransport:
    """HTTP/2 and nothing else (prior knowledge in clear text, ALPN over TLS), on one
    connection to the server at most."""
    return HTTPTransport(
        http_version=HTTPVersion.HTTP2,
        tls_ca_cert=ca,
        max_connections_per_address=1,
        timeout=None,
        read_timeout=None,
    )


async def one_round(client: ServerFunctionsClient, streams: int, max_batch: int) -> Outcome:
    """``streams`` concurrent calls of count_live; how each ended: OK with every chunk in
    order, else how it went wrong."""
    expected = list(range(CHUNKS))
    message = pb.InvokeRequest(function="count_live", json=json.dumps({"n": CHUNKS}))
    message.max_batch = max_batch

    async def one_stream() -> str:
        got: list[Any] = []
        try:
            async for chunk in client.invoke(message):
                texts = chunk.batch.json if chunk.WhichOneof("payload") == "batch" else [chunk.json]
                got += [json.loads(text) for text in texts]
        except ConnectError as error:
            return f"{error.code.name}: {error.message}"
        return "OK" if got == expected else "WRONG CHUNKS"

    return collections.Counter(await asyncio.gather(*(one_stream() for _ in range(streams))))


async def live_handlers(client: ServerFunctionsClient) -> dict[str, Any]:
    [chunk] = [c async for c in client.invoke(pb.InvokeRequest(function="live_handlers"))]
    result: dict[str, Any] = json.loads(chunk.json)
    return result


async def rounds(
    server: WebServerProcess, count: int = ROUNDS, max_batch: int = MAX_BATCH
) -> tuple[list[Outcome], list[dict[str, Any]], str]:
    """``count`` rounds of ``STREAMS`` concurrent streams on one HTTP/2 connection; how the
    streams of each round ended, the server's live handlers after each, the HTTP version."""
    transport = http2_only(server.ca)
    async with transport:
        http = Client(transport)
        # One raw request first: the version the connection speaks.
        url = f"{server.url}/serverfn.v1.ServerFunctions/ListFunctions"
        headers = {"content-type": "application/json"}
        async with http.stream("POST", url, headers, b"{}") as response:
            assert response.status == 200
            version = str(response.http_version)
        async with ServerFunctionsClient(
            server.url,
            http_client=http,
            protocol=ProtocolType.CONNECT,
            codec=google_protobuf_binary_codec(),
        ) as client:
            ended: list[collections.Counter[str]] = []
            live: list[dict[str, Any]] = []
            for _ in range(count):
                started = time.monotonic()
                ended.append(await one_round(client, STREAMS, max_batch))
                print(
                    f"{STREAMS} streams of {CHUNKS} chunks (max_batch {max_batch}):"
                    f" {time.monotonic() - started:.1f} s, {dict(ended[-1])}",
                    flush=True,
                )
                live.append(await live_handlers(client))
    return ended, live, version


def test_a_thousand_streams_on_one_http2_connection_lose_nothing(
    web_server: WebServerProcess,
) -> None:
    ended, live, version = asyncio.run(rounds(web_server))
    print(f"how each round's streams ended: {[dict(counts) for counts in ended]}")
    assert "2" in version, version
    assert ended == [collections.Counter({"OK": STREAMS})] * ROUNDS
    assert [state["handlers"] for state in live] == [0] * ROUNDS, live
    # Every call came over one connection (one caller address): HTTP/2's multiplexing, not
    # a pool of connections, carried the 1,000 concurrent streams.
    peers = live[-1]["peers"]
    assert len(peers) == 1, peers
    assert sum(peers.values()) == STREAMS * ROUNDS


def main() -> None:
    """The full figure: ``--rounds`` rounds (5) of 1,000 streams of 200 chunks, one chunk per
    message unless ``--max-batch``, over h2c and TLS."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-batch", type=int, default=0)
    parser.add_argument("--transport", choices=["h2c", "tls"], action="append")
    args = parser.parse_args()
    for transport in args.transport or ["h2c", "tls"]:
        with (
            tempfile.TemporaryDirectory() as directory,
            web_server_process(transport, Path(directory)) as server,
        ):
            print(f"{transport}: {server.url}", flush=True)
            ended, live, version = asyncio.run(rounds(server, args.rounds, args.max_batch))
            peers = live[-1]["peers"]
            print(
                f"{transport} ({version}): all OK {all(e == {'OK': STREAMS} for e in ended)};"
                f" live handlers after each round {[state['handlers'] for state in live]};"
                f" connections {len(peers)}, calls {sum(peers.values())}",
                flush=True,
            )


if __name__ == "__main__":
    main()
