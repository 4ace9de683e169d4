"""Everything a client does that is not I/O, shared by ``Client`` and ``AsyncClient``:
building requests, decoding chunks and function lists, turning a failed call into an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2

from . import codec
from ._proto.serverfn.v1 import serverfn_pb2
from ._version import __version__
from .errors import ServerFnError, error_from_status

__all__ = [
    "BaseClient",
    "FunctionInfo",
    "MetadataLike",
    "build_request",
    "decode_chunk",
    "error_from_rpc_error",
    "function_infos",
    "too_many_chunks",
]

MetadataLike = Mapping[str, str | bytes] | Sequence[tuple[str, str | bytes]]
Encoding = codec.Encoding

COALESCE_MAX_BATCH = 1024
"""How many chunks the clients accept packed into one message when coalescing (the default)."""

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


CallOptions = dict[str, Any]


class BaseClient:
    """What ``Client`` and ``AsyncClient`` share: configuration, and building every request.

    The subclasses only do I/O: they send what this builds and decode with the functions below.
    """

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float | None = None,
        metadata: MetadataLike | None = None,
        options: Iterable[tuple[str, Any]] = (),
        encoding: Encoding = "json",
        coalesce: bool = True,
    ) -> None:
        if encoding not in _ACCEPT:
            raise ValueError(f"encoding must be 'json' or 'value', not {encoding!r}")
        self.target = target
        self._credentials = credentials
        self._timeout = timeout
        self._metadata = _metadata_items(metadata)
        self._encoding: Encoding = encoding
        self._max_batch = COALESCE_MAX_BATCH if coalesce else 0
        self._channel_options = [
            ("grpc.primary_user_agent", f"grpc-serverfn-python/{__version__}"),
            *options,
        ]
        self._open()

    def _open(self) -> None:
        """Set up the channel (or get ready to, on first use)."""
        raise NotImplementedError

    def _call_options(self, timeout: float | None, metadata: MetadataLike | None) -> CallOptions:
        """Per-call options: the call's timeout, else the client's; the client's metadata
        followed by the call's."""
        merged = self._metadata + _metadata_items(metadata)
        return {
            "timeout": self._timeout if timeout is None else timeout,
            "metadata": merged or None,
        }

    def _invoke_request(self, function: str, data: Any) -> serverfn_pb2.InvokeRequest:
        return build_request(function, data, self._encoding, self._max_batch)


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
