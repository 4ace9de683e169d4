"""Errors that end a call with a gRPC status, on the server and on the client.

A handler raises one of these to end its stream with that status; a client raises the same
classes when a call ends with an error, so code on both sides reads alike::

    ServerFnError                 code UNKNOWN unless given; base of everything below
    ├── Cancelled                 CANCELLED
    ├── InvalidArgument           INVALID_ARGUMENT (validation errors carry a BadRequest)
    ├── DeadlineExceeded          DEADLINE_EXCEEDED
    ├── NotFound                  NOT_FOUND
    ├── AlreadyExists             ALREADY_EXISTS
    ├── PermissionDenied          PERMISSION_DENIED
    ├── ResourceExhausted         RESOURCE_EXHAUSTED
    ├── FailedPrecondition        FAILED_PRECONDITION
    ├── Aborted                   ABORTED
    ├── OutOfRange                OUT_OF_RANGE
    ├── Unimplemented             UNIMPLEMENTED
    ├── Internal                  INTERNAL (what unexpected exceptions become)
    ├── Unavailable               UNAVAILABLE
    ├── DataLoss                  DATA_LOSS
    └── Unauthenticated           UNAUTHENTICATED

A client also raises, for a chunk that is not what it expected (no status involved)::

    ValueError
    └── UnexpectedChunk           a chunk unlike the function's return annotation, when it is
                                  called by reference (``client.invoke(stream_chat, ...)``)

Details travel as ``google.rpc.Status`` in the ``grpc-status-details-bin`` trailer
(grpcio-status), with the status message equal to the gRPC status message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import ClassVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from ._wire import CODE_BY_NUMBER, GRPC_DETAILS_METADATA_KEY

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Cancelled",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "ServerFnError",
    "Unauthenticated",
    "UnexpectedChunk",
    "Unavailable",
    "Unimplemented",
    "error_class_for",
]


def echoed(text: str, limit: int = 100) -> str:
    """``text`` quoted for an error message, cut to ``limit`` characters: input echoed in full
    could push the trailers past the client's metadata limit, which then reports
    RESOURCE_EXHAUSTED instead of the error meant."""
    shown = repr(text[:limit])
    if len(text) > limit:
        shown += f" (cut from {len(text)} characters)"
    return shown


MAX_MESSAGE_CHARS = 1000
"""An error message longer than this is cut when sent."""

FieldViolation = tuple[str, str]
"""A ``(field, description)`` pair; ``field`` is a dotted path, ``""`` for the input itself."""


class ServerFnError(Exception):
    """A call ended, or should end, with a non-OK gRPC status.

    ``details`` are protobuf messages (``google.rpc.ErrorInfo``, ``BadRequest``, ...) sent in the
    ``google.rpc.Status`` trailer. Pass ``code`` to the base class for a code without a subclass.
    """

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        details: Sequence[Message] = (),
        code: grpc.StatusCode | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details: list[Message] = list(details)
        if code is not None:
            self.code = code  # type: ignore[misc]  # an instance may narrow the class default

    @property
    def field_violations(self) -> list[FieldViolation]:
        """Every ``(field, description)`` named by a ``google.rpc.BadRequest`` detail."""
        return [
            (violation.field, violation.description)
            for detail in self.details
            if isinstance(detail, error_details_pb2.BadRequest)
            for violation in detail.field_violations
        ]

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code.name})"

    def to_status(self) -> grpc.Status:
        """This error as a ``grpc.Status`` whose trailer carries the ``google.rpc.Status``."""
        return rpc_status.to_status(self.to_rpc_status())

    def to_rpc_status(self) -> status_pb2.Status:
        """This error as a ``google.rpc.Status`` message."""
        packed = []
        for detail in self.details:
            any_detail = any_pb2.Any()
            any_detail.Pack(detail)
            packed.append(any_detail)
        message = self.message
        if len(message) > MAX_MESSAGE_CHARS:
            # The message travels twice in the trailers (grpc-message and the Status), which a
            # client refuses past its metadata limit (8 KiB by default).
            message = f"{message[:MAX_MESSAGE_CHARS]}... (cut from {len(message)} characters)"
        return status_pb2.Status(code=self.code.value[0], message=message, details=packed)


class Cancelled(ServerFnError):
    """The call was cancelled, usually by the caller."""

    code = grpc.StatusCode.CANCELLED


class InvalidArgument(ServerFnError):
    """The input is invalid; ``field_violations`` names every bad field.

    ``InvalidArgument("bad input", field_violations=[("message", "must not be empty")])``
    """

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(
        self,
        message: str,
        *,
        field_violations: Iterable[FieldViolation] = (),
        details: Sequence[Message] = (),
        code: grpc.StatusCode | None = None,
    ) -> None:
        violations = [
            error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
            for field, description in field_violations
        ]
        extra: list[Message] = (
            [error_details_pb2.BadRequest(field_violations=violations)] if violations else []
        )
        super().__init__(message, details=[*extra, *details], code=code)


class DeadlineExceeded(ServerFnError):
    """The deadline passed before the call finished."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(ServerFnError):
    """Something the call names does not exist (an unknown function, for one)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServerFnError):
    """What the call would create exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(ServerFnError):
    """The caller is known but not allowed to do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(ServerFnError):
    """A quota or limit is used up."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(ServerFnError):
    """The system is not in a state in which the call can run."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(ServerFnError):
    """The call was aborted, typically by a concurrency conflict; retry at a higher level."""

    code = grpc.StatusCode.ABORTED


class OutOfRange(ServerFnError):
    """The call went past a valid range."""

    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(ServerFnError):
    """The server does not implement this (an old server, or a missing service)."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(ServerFnError):
    """The server failed; the details are in its log, not in the message."""

    code = grpc.StatusCode.INTERNAL


class Unavailable(ServerFnError):
    """The server cannot be reached or is shutting down; the call may be retried."""

    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(ServerFnError):
    """Unrecoverable data loss or corruption."""

    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(ServerFnError):
    """The caller's credentials are missing or invalid."""

    code = grpc.StatusCode.UNAUTHENTICATED


_CLASS_BY_CODE: Mapping[grpc.StatusCode, type[ServerFnError]] = {
    cls.code: cls
    for cls in (
        Cancelled,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}


def error_class_for(code: grpc.StatusCode) -> type[ServerFnError]:
    """The ``ServerFnError`` subclass for a status code (the base class for UNKNOWN)."""
    return _CLASS_BY_CODE.get(code, ServerFnError)


def error_from_status(
    code: grpc.StatusCode,
    message: str,
    trailing_metadata: Iterable[tuple[str, str | bytes]] | None,
) -> ServerFnError:
    """Build the error a client raises from a call's final status and trailers."""
    details = _details_from_trailers(code, trailing_metadata or ())
    cls = error_class_for(code)
    if cls is ServerFnError:
        return ServerFnError(message, details=details, code=code)
    # Bypass subclass constructors (InvalidArgument builds details from field_violations).
    error = cls.__new__(cls)
    ServerFnError.__init__(error, message, details=details)
    return error


def _details_from_trailers(
    code: grpc.StatusCode, trailing_metadata: Iterable[tuple[str, str | bytes]]
) -> list[Message]:
    raw = next(
        (value for key, value in trailing_metadata if key == GRPC_DETAILS_METADATA_KEY),
        None,
    )
    if not isinstance(raw, bytes):
        return []
    try:
        status = status_pb2.Status.FromString(raw)
    except DecodeError:
        return []
    if CODE_BY_NUMBER.get(status.code) is not code:
        return []  # a trailer that contradicts the status is not trusted
    return [detail for packed in status.details if (detail := _unpack(packed)) is not None]


_KNOWN_DETAIL_TYPES: Mapping[str, type[Message]] = {
    cls.DESCRIPTOR.full_name: cls
    for cls in (
        error_details_pb2.BadRequest,
        error_details_pb2.ErrorInfo,
        error_details_pb2.RetryInfo,
        error_details_pb2.DebugInfo,
        error_details_pb2.QuotaFailure,
        error_details_pb2.PreconditionFailure,
        error_details_pb2.RequestInfo,
        error_details_pb2.ResourceInfo,
        error_details_pb2.Help,
        error_details_pb2.LocalizedMessage,
    )
}


def _unpack(packed: any_pb2.Any) -> Message | None:
    cls = _KNOWN_DETAIL_TYPES.get(packed.TypeName())
    if cls is None:
        return packed  # unknown detail types stay packed; callers can Unpack them
    message = cls()
    return message if packed.Unpack(message) else None


class UnexpectedChunk(ValueError):
    """A chunk that does not match the return annotation of the function called by reference:
    the server sent something else than its signature says (an older or newer server, or a
    function that yields what it does not declare). A ``ValueError``, not a ``ServerFnError``:
    the call itself did not fail, and the client cancels it when it raises this.

    ``function`` names the function, ``expected`` the chunk type, ``chunk`` is the value as
    received and ``field_violations`` the ``(field, description)`` pairs that differ.
    """

    def __init__(
        self,
        function: str,
        expected: str,
        chunk: object,
        field_violations: Sequence[FieldViolation],
    ) -> None:
        summary = "; ".join(
            f"{field or '(chunk)'}: {description}" for field, description in field_violations
        )
        super().__init__(f"{function!r} sent a chunk that is not a {expected}: {summary}")
        self.function = function
        self.expected = expected
        self.chunk = chunk
        self.field_violations = list(field_violations)
