"""The service's protobuf messages, read and written at a transport's edge: an
``InvokeRequest`` becomes the core's ``Invocation`` (parsed once, here), a registry becomes the
``ListFunctionsResponse``, and bytes that are not the request message are refused cleanly.
Every transport of ``serverfn.v1.ServerFunctions`` shares these.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError, Message

from . import _codec as codec
from ._proto.serverfn.v1 import serverfn_pb2
from ._transport import InputKind, Invocation, ResumePoint
from .auth import Identity
from .context import Metadata
from .errors import InvalidArgument
from .registry import NO_INPUT, Registry, ServerFunction

__all__ = ["Undecodable", "function_list", "invocation_of", "tolerant_parser"]

_METHODS = {"GET": serverfn_pb2.METHOD_GET, "POST": serverfn_pb2.METHOD_POST}
_ACCEPT: dict[int, codec.Encoding] = {
    serverfn_pb2.ENCODING_JSON: "json",
    serverfn_pb2.ENCODING_VALUE: "value",
}


class Undecodable:
    """A request whose bytes are not the message the RPC takes (left for the core to refuse,
    so the refusal is INVALID_ARGUMENT, observed and logged like any other)."""

    __slots__ = ("message_type", "reason")

    def __init__(self, message_type: str, reason: str) -> None:
        self.message_type = message_type
        self.reason = reason

    def error(self) -> InvalidArgument:
        return InvalidArgument(f"the request is not a valid {self.message_type}: {self.reason}")


def tolerant_parser(message: type[Message]) -> Callable[[bytes], Any]:
    """A request deserializer that returns ``Undecodable`` instead of raising (grpc's own
    failure is UNKNOWN with the exception's text)."""
    name = message.DESCRIPTOR.full_name

    def parse(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except DecodeError as error:
            reason = str(error).rpartition(": ")[2]
            return Undecodable(name, _DECODE_REASONS.get(reason, reason) or "undecodable")

    return parse


# upb's reasons read as plain English, except this one, which names its C option.
_DECODE_REASONS = {
    "Exceeded upb_DecodeOptions_MaxDepth": "messages nested more than protobuf's 100 levels"
}


def invocation_of(
    request: serverfn_pb2.InvokeRequest | Undecodable,
    metadata: Metadata,
    peer: str,
    time_remaining: float | None,
    identify: Callable[[], Identity | None] | None,
    protocol: str,
) -> Invocation:
    """The core's Invocation for an InvokeRequest, with what the transport knows of the call."""
    if isinstance(request, Undecodable):
        return Invocation(
            "", metadata=metadata, peer=peer, unreadable=request.error(), protocol=protocol
        )
    which = request.WhichOneof("input")
    data: Any = NO_INPUT
    kind: InputKind = "none"
    if which == "value":
        data, kind = codec.from_value(request.value), "value"
    elif which == "json" and request.json:
        data, kind = request.json, "json"
    invalid = None
    accept = request.accept
    if accept == serverfn_pb2.ENCODING_UNSPECIFIED:
        encoding: codec.Encoding = "value" if which == "value" else "json"
    elif (known := _ACCEPT.get(accept)) is not None:
        encoding = known
    else:
        encoding = "json"
        invalid = InvalidArgument(
            f"unknown accept encoding {accept}; expected ENCODING_JSON (1) or ENCODING_VALUE (2)",
            field_violations=[("accept", f"unknown encoding {accept}")],
        )
    resume = None
    if request.HasField("resume"):
        resume = ResumePoint(request.resume.stream_id, request.resume.next_seq)
    return Invocation(
        request.function,
        data,
        kind,
        encoding,
        request.max_batch or 1,
        resume,
        metadata,
        peer,
        time_remaining,
        identify,
        None,
        invalid,
        protocol,
    )


def function_list(registry: Registry) -> serverfn_pb2.ListFunctionsResponse:
    """What ``ListFunctions`` answers for ``registry``."""
    return serverfn_pb2.ListFunctionsResponse(functions=[_describe(f) for f in registry])


def _describe(function: ServerFunction) -> serverfn_pb2.FunctionInfo:
    info = serverfn_pb2.FunctionInfo(
        name=function.name,
        description=function.description,
        streaming=function.streaming,
        method=_METHODS[function.method],
        takes_input=function.takes_input,
        input_required=function.input_required,
        resumable=function.resumable,
    )
    if function.validator is not None:
        info.input_schema.CopyFrom(codec.dict_to_struct(function.validator.schema))
    if function.output_schema is not None:
        info.output_schema.CopyFrom(codec.dict_to_struct(function.output_schema))
    return info
