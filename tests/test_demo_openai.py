"""The demo's OpenAI path, against an OpenAI-compatible endpoint served on loopback.

The real openai package talks HTTP to a small server in this test that streams chat
completion chunks as server-sent events, the way the API does; nothing leaves the machine.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from grpc_serverfn import Client, Unavailable
from grpc_serverfn.testing import RunningServer

TOKENS = ["Hel", "lo", " from", " the", " API", "!"]


class FakeOpenAI(BaseHTTPRequestHandler):
    requests: ClassVar[list[dict[str, Any]]] = []
    fail = False

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.requests.append(
            {"path": self.path, "body": body, "auth": self.headers["Authorization"]}
        )
        if FakeOpenAI.fail:
            self._reply(
                400, b'{"error": {"message": "bad model", "type": "invalid_request_error"}}'
            )
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for token in [None, *TOKENS]:
            delta = {"role": "assistant", "content": ""} if token is None else {"content": token}
            chunk = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
            }
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")

    def _reply(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def openai_endpoint() -> Iterator[str]:
    http = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{http.server_address[1]}/v1"
    finally:
        http.shutdown()
        http.server_close()


@pytest.fixture(scope="module")
def server(demo_server: RunningServer) -> RunningServer:
    return demo_server


@pytest.fixture(autouse=True)
def openai_env(monkeypatch: pytest.MonkeyPatch, openai_endpoint: str) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", openai_endpoint)
    monkeypatch.setenv("OPENAI_MODEL", "gpt-test")
    FakeOpenAI.requests.clear()
    FakeOpenAI.fail = False


def test_stream_chat_streams_the_apis_tokens_one_chunk_each(server: RunningServer) -> None:
    with Client(server.target) as client:
        chunks = list(client.invoke("stream_chat", {"message": "hi there"}))
    assert chunks == [{"text": token} for token in TOKENS]
    (request,) = FakeOpenAI.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == "Bearer sk-test"
    assert request["body"]["model"] == "gpt-test"
    assert request["body"]["stream"] is True
    assert request["body"]["messages"] == [{"role": "user", "content": "hi there"}]


def test_an_api_failure_is_unavailable_without_the_upstream_text(server: RunningServer) -> None:
    FakeOpenAI.fail = True
    with Client(server.target) as client, pytest.raises(Unavailable) as caught:
        list(client.invoke("stream_chat", {"message": "hi"}))
    assert caught.value.message == "the OpenAI API failed (BadRequestError)"
