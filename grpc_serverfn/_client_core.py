"""Everything a client does that is not I/O, shared by ``Client`` and ``AsyncClient``:
TLS configuration, building requests, decoding chunks and function lists, turning a failed call
into an error (a failed TLS connection with a hint at its likely cause).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import grpc
from grpc_health.v1 import health_pb2

from . import _codec as codec
from ._proto.serverfn.v1 import serverfn_pb2
from ._trace_context import trace_metadata
from ._version import __version__
from ._wire import COALESCE_MAX_BATCH, STREAM_ID_METADATA_KEY
from .errors import ServerFnError, Unavailable, error_from_status

__all__ = [
    "BaseClient",
    "ClientTLS",
    "ResumePolicy",
    "Resumer",
    "FunctionInfo",
    "MetadataLike",
    "build_request",
    "connection_hint",
    "decode_chunk",
    "error_from_rpc_error",
    "function_infos",
    "too_many_chunks",
]

MetadataLike = Mapping[str, str | bytes] | Sequence[tuple[str, str | bytes]]
Encoding = codec.Encoding


_ACCEPT = {"json": serverfn_pb2.ENCODING_JSON, "value": serverfn_pb2.ENCODING_VALUE}
_METHOD_NAMES = {serverfn_pb2.METHOD_GET: "GET", serverfn_pb2.METHOD_POST: "POST"}


@dataclass(frozen=True, slots=True)
class FunctionInfo:
    """A server function as ``ListFunctions`` describes it."""

    name: str
    description: str
    streaming: bool
    method: str
    takes_input: bool
    input_required: bool
    input_schema: dict[str, Any] | None
    output_schema: dict[str, Any] | None
    resumable: bool
    """Whether calls are resumable streams: they announce a stream id and can be resumed."""


CallOptions = dict[str, Any]
ErrorMapper = Callable[[Any], ServerFnError]
"""Turns a failed call (a ``grpc.RpcError``) into the ``ServerFnError`` to raise."""

Security = Literal["insecure", "tls", "mtls", "credentials"]
"""How a client connects: plaintext, TLS, TLS with a client certificate, or caller-made
``grpc.ChannelCredentials`` (whose contents the client cannot see)."""


@dataclass(frozen=True, slots=True)
class ClientTLS:
    """Client TLS material (PEM): ``ca`` verifies the server (None: the system's roots); a
    ``certificate_chain`` and its ``private_key`` are the client certificate for mutual TLS;
    ``server_name`` is the name the server's certificate must hold when it differs from the
    host dialled (e.g. dialling an IP address)."""

    ca: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise ValueError("a client certificate needs both certificate_chain and private_key")

    @classmethod
    def from_files(
        cls,
        ca: str | Path | None = None,
        certificate_chain: str | Path | None = None,
        private_key: str | Path | None = None,
        server_name: str | None = None,
    ) -> ClientTLS:
        """Read the PEM files (each optional, as in the constructor)."""
        return cls(
            Path(ca).read_bytes() if ca is not None else None,
            Path(certificate_chain).read_bytes() if certificate_chain is not None else None,
            Path(private_key).read_bytes() if private_key is not None else None,
            server_name,
        )

    @property
    def has_certificate(self) -> bool:
        """Whether this presents a client certificate (mutual TLS)."""
        return self.certificate_chain is not None

    def credentials(self) -> grpc.ChannelCredentials:
        """The grpc channel credentials for this material."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        """The channel options this needs: the server name override, if any."""
        if self.server_name is None:
            return []
        return [("grpc.ssl_target_name_override", self.server_name)]


@dataclass(frozen=True, slots=True)
class ResumePolicy:
    """How the clients pick a resumable stream up again when its connection drops (the call
    fails with UNAVAILABLE): up to ``attempts`` resumes per stream, waiting ``backoff`` seconds
    before the first and twice as long before each next one, at most ``max_backoff``; each
    attempt waits up to ``connect_timeout`` seconds for a server to accept the connection (a
    replica restarting, a load balancer moving the stream elsewhere)."""

    attempts: int = 5
    backoff: float = 0.1
    max_backoff: float = 2.0
    connect_timeout: float = 5.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before resume number ``attempt`` (counting from 1)."""
        return float(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))


DEFAULT_RESUME = ResumePolicy()


class BaseClient:
    """What ``Client`` and ``AsyncClient`` share: configuration, and building every request.

    The subclasses only do I/O: they send what this builds and decode with the functions below.
    """

    def __init__(
        self,
        target: str,
        *,
        tls: ClientTLS | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
        options: Iterable[tuple[str, Any]] = (),
        encoding: Encoding = "json",
        coalesce: bool = True,
        resume: ResumePolicy | None = DEFAULT_RESUME,
        channels: int = 1,
    ) -> None:
        if encoding not in _ACCEPT:
            raise ValueError(f"encoding must be 'json' or 'value', not {encoding!r}")
        if tls is not None and credentials is not None:
            raise ValueError("pass tls= or credentials=, not both")
        self.target = target
        self._security: Security = "insecure"
        if tls is not None:
            credentials = tls.credentials()
            options = [*tls.channel_options(), *options]
            self._security = "mtls" if tls.has_certificate else "tls"
        elif credentials is not None:
            self._security = "credentials"
        self._credentials = credentials
        self._timeout = timeout
        self._metadata = _metadata_items(metadata)
        self._encoding: Encoding = encoding
        self._max_batch = COALESCE_MAX_BATCH if coalesce else 0
        self._resume = resume
        if channels < 1:
            raise ValueError(f"channels must be 1 or more, not {channels}")
        self._channel_count = channels
        self._channel_options = [
            ("grpc.primary_user_agent", f"grpc-serverfn-python/{__version__}"),
            *options,
            # After the caller's options (grpc takes the first of a repeated one): spread calls
            # over every address a target resolves to (dns:///service, ipv4:a:p,b:p).
            ("grpc.lb_policy_name", "round_robin"),
        ]
        if channels > 1:
            # Channels share connections unless each keeps its own subchannels.
            self._channel_options.append(("grpc.use_local_subchannel_pool", 1))
        self._open()

    def _open(self) -> None:
        """Set up the channel (or get ready to, on first use)."""
        raise NotImplementedError

    def _call_options(self, timeout: float | None, metadata: MetadataLike | None) -> CallOptions:
        """Per-call options: the call's timeout, else the client's; the client's metadata
        followed by the call's, then the current trace context (unless they carry one)."""
        merged = self._metadata + _metadata_items(metadata)
        traced = trace_metadata()
        if traced and not any(key == "traceparent" for key, _ in merged):
            merged += traced
        return {
            "timeout": self._timeout if timeout is None else timeout,
            "metadata": merged or None,
        }

    def _invoke_request(self, function: str, data: Any) -> serverfn_pb2.InvokeRequest:
        return build_request(function, data, self._encoding, self._max_batch)

    def _resume_request(
        self, stream_id: str, next_seq: int, function: str
    ) -> serverfn_pb2.InvokeRequest:
        request = build_request(function, None, self._encoding, self._max_batch)
        request.resume.stream_id = stream_id
        request.resume.next_seq = next_seq
        return request

    def _resumer(
        self,
        request: serverfn_pb2.InvokeRequest,
        timeout: float | None,
        stream_id: str | None = None,
    ) -> Resumer | None:
        """How a stream resumes (None: it does not); ``stream_id`` when it is already known."""
        if self._resume is None:
            return None
        resumer = Resumer(self._resume, request, self._timeout if timeout is None else timeout)
        resumer.stream_id = stream_id
        return resumer

    def _error(self, error: _FailedCall) -> ServerFnError:
        """The ``ServerFnError`` for a failed call; a connection that failed the way a TLS
        mismatch makes it fail says what to check."""
        if error.code() is grpc.StatusCode.UNAVAILABLE:
            details = error.details() or ""
            hint = connection_hint(details, self._security)
            if hint is not None:
                return Unavailable(f"cannot connect to {self.target}: {hint} (grpc: {details})")
        return error_from_rpc_error(error)


@dataclass(frozen=True, slots=True)
class ResumePlan:
    """The next call of a stream being resumed, and how long to wait before making it."""

    request: serverfn_pb2.InvokeRequest
    delay: float
    timeout: float | None
    connect_timeout: float


class Resumer:
    """Decides whether and how a failed stream resumes; the streams only do the I/O."""

    __slots__ = ("_attempts", "_deadline", "_policy", "_request", "stream_id")

    def __init__(
        self, policy: ResumePolicy, request: serverfn_pb2.InvokeRequest, timeout: float | None
    ) -> None:
        self._policy = policy
        self._request = request
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._attempts = 0
        self.stream_id: str | None = None
        """The stream's id, once the server announced one (resumable functions only)."""

    def note_metadata(self, metadata: Any) -> str | None:
        """Read the stream id from the call's initial metadata; the id (None: not resumable)."""
        if self.stream_id is None:
            self.stream_id = stream_id_of(metadata)
        return self.stream_id

    def plan(self, code: grpc.StatusCode, last: serverfn_pb2.Chunk | None) -> ResumePlan | None:
        """The resume to try after a call failed with ``code``, or None to raise the error.
        ``last`` is the last message received (on any of the stream's calls)."""
        if code is not grpc.StatusCode.UNAVAILABLE or self.stream_id is None:
            return None
        if self._attempts >= self._policy.attempts:
            return None
        timeout = None
        if self._deadline is not None:
            timeout = self._deadline - time.monotonic()
            if timeout <= 0:
                return None
        self._attempts += 1
        request = serverfn_pb2.InvokeRequest(
            function=self._request.function,
            accept=self._request.accept,
            max_batch=self._request.max_batch,
            resume=serverfn_pb2.Resume(stream_id=self.stream_id, next_seq=next_seq_after(last)),
        )
        connect_timeout = self._policy.connect_timeout
        if timeout is not None:
            connect_timeout = min(connect_timeout, timeout)
        return ResumePlan(request, self._policy.delay(self._attempts), timeout, connect_timeout)


def stream_id_of(metadata: Any) -> str | None:
    """The ``serverfn-stream-id`` a resumable call announces in its initial metadata."""
    for key, value in metadata or ():
        if key == STREAM_ID_METADATA_KEY:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def next_seq_after(message: serverfn_pb2.Chunk | None) -> int:
    """The sequence number of the chunk after those ``message`` carries (0: none yet)."""
    if message is None:
        return 0
    if message.WhichOneof("payload") == "batch":
        return message.seq + len(message.batch.json) + len(message.batch.values)
    return message.seq + 1


def _metadata_items(metadata: MetadataLike | None) -> tuple[tuple[str, str | bytes], ...]:
    if not metadata:
        return ()
    items = metadata.items() if isinstance(metadata, Mapping) else metadata
    return tuple((key.lower(), value) for key, value in items)


def build_request(
    function: str, data: Any, encoding: Encoding, max_batch: int = 0
) -> serverfn_pb2.InvokeRequest:
    """The Invoke request; ``data=None`` sends no input."""
    request = serverfn_pb2.InvokeRequest(
        function=function, accept=_ACCEPT[encoding], max_batch=max_batch
    )
    if data is not None:
        if encoding == "value":
            codec.fill_value(request.value, data)
        else:
            request.json = codec.encode_json(data)
    return request


class Batch(list[Any]):
    """The values of a coalesced message; the clients yield them one by one."""

    __slots__ = ()


def decode_chunk(chunk: serverfn_pb2.Chunk) -> Any:
    """The Python value a message carries, or a ``Batch`` of them for a coalesced one."""
    which = chunk.WhichOneof("payload")
    if which == "json":
        return codec.decode_json(chunk.json)
    if which == "value":
        return codec.from_value(chunk.value)
    if which == "batch":
        batch = chunk.batch
        if batch.json:
            return Batch(map(codec.decode_json, batch.json))
        return Batch(map(codec.from_value, batch.values))
    return None


class _FailedCall(Protocol):
    def code(self) -> grpc.StatusCode: ...
    def details(self) -> str | None: ...
    def trailing_metadata(self) -> Any: ...


def error_from_rpc_error(error: _FailedCall) -> ServerFnError:
    """The ``ServerFnError`` subclass for a failed call, with its message and parsed details."""
    trailers = error.trailing_metadata()
    items = [(item[0], item[1]) for item in trailers] if trailers else []
    return error_from_status(error.code(), error.details() or "", items)


_CLIENT_FLAGS = "ClientTLS(certificate_chain=..., private_key=...); command line: --cert, --key"
_HINTS: tuple[tuple[tuple[str, ...], frozenset[str], str], ...] = (
    # (substrings of grpc's details, lower-cased; the securities they apply to; the hint)
    (
        ("certificate_verify_failed",),
        frozenset({"tls", "mtls", "credentials"}),
        "the server's certificate is not signed by a CA this client trusts; pass the CA that"
        " signed it (ClientTLS(ca=...); command line: --ca)",
    ),
    (
        ("hostname verification", "peer name"),
        frozenset({"tls", "mtls", "credentials"}),
        "the server's certificate does not hold the name dialled; dial a name it holds, or set"
        " it (ClientTLS(server_name=...); command line: --server-name)",
    ),
    (
        ("wrong_version_number",),
        frozenset({"tls", "mtls", "credentials"}),
        "the server does not speak TLS; connect without TLS",
    ),
    (
        ("certificate_required", "socket closed"),
        frozenset({"tls"}),
        "the server closed the connection during the TLS handshake, as a server that requires"
        f" mutual TLS does to a client without a certificate; present one ({_CLIENT_FLAGS})",
    ),
    (
        ("unknown_ca", "bad_certificate", "certificate_unknown", "socket closed"),
        frozenset({"mtls"}),
        "the server closed the connection during the TLS handshake, as a server that requires"
        " mutual TLS does when it does not accept the client certificate; check that it is"
        " signed by the CA the server trusts (serve --tls-client-ca) and still valid",
    ),
    (
        ("socket closed",),
        frozenset({"credentials"}),
        "the server closed the connection during the TLS handshake; if it requires mutual TLS,"
        " the credentials must carry a client certificate it accepts",
    ),
    (
        ("socket closed",),
        frozenset({"insecure"}),
        "the server closed the connection at once, as a TLS server does to a plaintext client;"
        " connect with TLS (tls=ClientTLS(...); command line: --tls or --ca)",
    ),
)


def connection_hint(details: str, security: Security) -> str | None:
    """What to check when a connection failed with these details, or None when they do not
    look like a TLS mismatch (e.g. a refused connection)."""
    lowered = details.lower()
    # pick_first and round_robin's words for "no connection could be made".
    if "failed to connect" not in lowered and "connections to all backends failing" not in lowered:
        return None  # the connection was up: whatever ended the call, it was not the handshake
    for needles, securities, hint in _HINTS:
        if security in securities and any(needle in lowered for needle in needles):
            return hint
    return None


def function_infos(response: serverfn_pb2.ListFunctionsResponse) -> list[FunctionInfo]:
    return [
        FunctionInfo(
            name=info.name,
            description=info.description,
            streaming=info.streaming,
            method=_METHOD_NAMES.get(info.method, "GET"),
            takes_input=info.takes_input,
            input_required=info.input_required,
            input_schema=codec.struct_to_dict(info.input_schema)
            if info.HasField("input_schema")
            else None,
            output_schema=codec.struct_to_dict(info.output_schema)
            if info.HasField("output_schema")
            else None,
            resumable=info.resumable,
        )
        for info in response.functions
    ]


def health_status(response: health_pb2.HealthCheckResponse) -> str:
    """The status's name: ``SERVING``, ``NOT_SERVING``, ``SERVICE_UNKNOWN`` or ``UNKNOWN``."""
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def too_many_chunks(function: str) -> ValueError:
    return ValueError(
        f"{function!r} streamed more than one chunk; iterate invoke() to receive them all"
    )


def no_chunk(function: str) -> ValueError:
    return ValueError(f"{function!r} ended without producing a value")
