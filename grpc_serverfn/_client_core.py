"""Everything a client does that is not I/O, shared by ``Client`` and ``AsyncClient``:
TLS configuration, building requests, decoding chunks and function lists, deciding whether a
failed call is made again or resumed, turning a failed call into an error (a failed TLS
connection with a hint at its likely cause).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2

from . import _codec as codec
from ._proto.serverfn.v1 import serverfn_pb2
from ._trace_context import trace_metadata
from ._version import __version__
from ._wire import (
    COALESCE_MAX_BATCH,
    ERROR_DOMAIN,
    GRPC_DETAILS_METADATA_KEY,
    NOT_STARTED_REASONS,
    STREAM_ID_METADATA_KEY,
)
from .errors import ServerFnError, Unavailable, error_from_status

__all__ = [
    "BaseClient",
    "ClientTLS",
    "ResumePolicy",
    "Resumer",
    "RetryPolicy",
    "Retrier",
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


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How the clients make a call again when it failed before any chunk arrived and making
    it again is safe: up to ``attempts`` more times, waiting ``backoff`` seconds before the
    first and twice as long before each next one, at most ``max_backoff`` (each wait shortened
    at random by up to half, so that the calls of a refused burst do not all come back at
    once; never shorter than the server's ``google.rpc.RetryInfo`` asks), within the call's
    timeout. Made again:

    - any call the server refused before running its function: RESOURCE_EXHAUSTED at its
      concurrent-call limit, UNAVAILABLE while it shuts down (a ``google.rpc.ErrorInfo`` in
      domain ``serverfn.v1``, reason ``SERVER_AT_CAPACITY`` or ``SERVER_SHUTTING_DOWN``);
    - a call of a GET function (safe to repeat; its method is asked of the server with
      ``ListFunctions`` when first needed, again at the next attempt while it cannot be told)
      that failed with UNAVAILABLE once connected (the connection dropped, or the server
      refused the stream) or that grpc dropped (CANCELLED without a status from the server,
      as grpc does with calls beyond the server's pending-call limit). A channel that could
      not connect at all fails at once, as before: grpc waits before it connects again.

    A POST function's call that may have started is never made again; a call that delivered a
    chunk is never made again (a resumable stream resumes instead, see ``ResumePolicy``).
    """

    attempts: int = 3
    backoff: float = 0.1
    max_backoff: float = 1.0

    def delay(self, attempt: int, at_least: float = 0.0) -> float:
        """Seconds to wait before attempt ``attempt`` (counting from 1), at least ``at_least``."""
        longest = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))
        return max(at_least, longest * random.uniform(0.5, 1.0))


DEFAULT_RETRY = RetryPolicy()


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
        retry: RetryPolicy | None = DEFAULT_RETRY,
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
        self._retry = retry
        self._closed = False
        # Each function's method (GET, POST), as ListFunctions told it, and how many times it
        # was asked (the calls that waited for one answer share it, whatever it was).
        self._methods: dict[str, str] = {}
        self._lookups = 0
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

    def _retrier(
        self, request: serverfn_pb2.InvokeRequest, timeout: float | None
    ) -> Retrier | None:
        """When the call is made again (None: never)."""
        if self._retry is None:
            return None
        return Retrier(
            self._retry, request, self._timeout if timeout is None else timeout, self._is_closed
        )

    def _is_closed(self) -> bool:
        return self._closed

    def _learn_methods(self, infos: Iterable[FunctionInfo]) -> None:
        self._methods.update((info.name, info.method) for info in infos)

    def _should_look_up(self, asked: int) -> bool:
        """Whether a call that found ``asked`` lookups made, and has waited its turn, makes
        one: not when another did meanwhile (its answer, or its failure, is this call's)."""
        if self._lookups != asked:
            return False
        self._lookups += 1
        return True

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


METHOD_LOOKUP_TIMEOUT = 5.0
"""The longest a client waits for ListFunctions when it needs a function's method."""


@dataclass(frozen=True, slots=True)
class RetryPlan:
    """The same call made again: ``request`` after ``delay`` seconds, with ``timeout`` left;
    ``if_get``: only if the function's method is GET."""

    request: serverfn_pb2.InvokeRequest
    delay: float
    timeout: float | None
    if_get: bool


class Retrier:
    """Decides whether a call that failed before its first chunk is made again (see
    ``RetryPolicy``); the streams only do the I/O."""

    __slots__ = ("_attempts", "_closed", "_deadline", "_policy", "_request", "cancelled")

    def __init__(
        self,
        policy: RetryPolicy,
        request: serverfn_pb2.InvokeRequest,
        timeout: float | None,
        closed: Callable[[], bool],
    ) -> None:
        self._policy = policy
        self._request = request
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._closed = closed
        self._attempts = 0
        self.cancelled = False
        """Set when the caller cancels the call: its CANCELLED is then not retried."""

    def plan(self, error: _FailedCall, received: bool) -> RetryPlan | None:
        """How to make the call again after it failed with ``error``, or None to raise it;
        ``received``: whether any chunk arrived (then it is never made again)."""
        if received or self.cancelled or self._closed() or self._attempts >= self._policy.attempts:
            return None
        code = error.code()
        refused = refusal_of(error)
        if refused is not None:
            if_get, at_least = False, refused
        elif (code is grpc.StatusCode.UNAVAILABLE and not _never_connected(error)) or (
            code is grpc.StatusCode.CANCELLED and not _has_status(error)
        ):
            if_get, at_least = True, 0.0
        else:
            return None
        delay = self._policy.delay(self._attempts + 1, at_least)
        timeout = None
        if self._deadline is not None:
            timeout = self._deadline - time.monotonic() - delay
            if timeout <= 0:
                return None
        self._attempts += 1
        return RetryPlan(self._request, delay, timeout, if_get)


def refusal_of(error: _FailedCall) -> float | None:
    """For a call the server refused before running its function (``google.rpc.ErrorInfo``
    in domain ``serverfn.v1`` with a not-started reason), the seconds its
    ``google.rpc.RetryInfo`` asks to wait (0 without one); None for any other failure."""
    if error.code() not in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
        return None
    details = error_from_rpc_error(error).details
    if not any(
        isinstance(detail, error_details_pb2.ErrorInfo)
        and detail.domain == ERROR_DOMAIN
        and detail.reason in NOT_STARTED_REASONS
        for detail in details
    ):
        return None
    for detail in details:
        if isinstance(detail, error_details_pb2.RetryInfo):
            return float(detail.retry_delay.ToTimedelta().total_seconds())
    return 0.0


def _has_status(error: _FailedCall) -> bool:
    """Whether the server ended the call with a status of its own (a grpc-serverfn server
    sends its ``google.rpc.Status`` with every error); grpc's own resets carry none."""
    return any(item[0] == GRPC_DETAILS_METADATA_KEY for item in error.trailing_metadata() or ())


def _never_connected(error: _FailedCall) -> bool:
    """Whether the channel could not connect at all (then grpc waits before it tries again,
    so making the call again at once would fail the same way)."""
    return _failed_to_connect((error.details() or "").lower())


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


def _failed_to_connect(lowered_details: str) -> bool:
    # pick_first and round_robin's words for "no connection could be made".
    return (
        "failed to connect" in lowered_details
        or "connections to all backends failing" in lowered_details
    )


def connection_hint(details: str, security: Security) -> str | None:
    """What to check when a connection failed with these details, or None when they do not
    look like a TLS mismatch (e.g. a refused connection)."""
    lowered = details.lower()
    if not _failed_to_connect(lowered):
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
