"""The grpc.aio transport: ``serverfn.v1.ServerFunctions`` on a grpc.aio server, a thin shell
over the call core.

Each RPC's request is parsed once, here (``_messages.invocation_of``), and the call handed to
``CallCore`` with a ``GrpcTransport`` over the servicer context. The RPCs are registered with
tolerant request parsers, so bytes that are not the request message end as INVALID_ARGUMENT
rather than grpc's UNKNOWN with the exception's text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
import grpc.aio

from ._call import CallCore
from ._messages import Undecodable, function_list, invocation_of, tolerant_parser
from ._proto.serverfn.v1 import serverfn_pb2
from ._transport import Ending, Invocation, Send
from ._wire import SERVICE_NAME
from .auth import Identity, certificate_identity
from .context import Metadata

__all__ = ["GrpcTransport", "add_to_server"]

_ServicerContext = grpc.aio.ServicerContext[Any, Any]


class GrpcTransport:
    """The core's Transport over one grpc.aio call."""

    __slots__ = ("_context", "send")

    def __init__(self, context: _ServicerContext) -> None:
        self._context = context
        self.send: Send = context.write  # grpc's own: nothing between it and the core

    async def send_headers(self, headers: Sequence[tuple[str, str]]) -> None:
        await self._context.send_initial_metadata(tuple(headers))

    async def finish(self, ending: Ending) -> None:
        context = self._context
        if ending.code is not grpc.StatusCode.OK:
            context.set_code(ending.code)
            context.set_details(ending.message)
        if ending.trailers:
            context.set_trailing_metadata(tuple(ending.trailers))

    def caller_gone(self) -> bool:
        return bool(self._context.cancelled())


class _Servicer:
    """The three RPCs, each a parse and a hand-over to the core."""

    def __init__(self, core: CallCore, *, verified_client_certificates: bool) -> None:
        self._core = core
        # Only a server that verifies client certificates may take their subject as identity.
        self._certificates = verified_client_certificates
        self._function_list = function_list(core.registry)

    def _invocation(
        self, request: serverfn_pb2.InvokeRequest | Undecodable, context: _ServicerContext
    ) -> Invocation:
        # grpc's own tuple of (key, value) pairs, kept rather than copied.
        return invocation_of(
            request,
            Metadata(context.invocation_metadata() or ()),
            context.peer(),
            context.time_remaining(),
            _certificate_identifier(context) if self._certificates else None,
            "grpc",
        )

    async def invoke(
        self,
        request: serverfn_pb2.InvokeRequest | Undecodable,
        context: grpc.aio.ServicerContext[serverfn_pb2.InvokeRequest, serverfn_pb2.Chunk],
    ) -> None:
        await self._core.invoke(self._invocation(request, context), GrpcTransport(context))

    async def cancel_stream(
        self,
        request: serverfn_pb2.CancelStreamRequest | Undecodable,
        context: _ServicerContext,
    ) -> serverfn_pb2.CancelStreamResponse:
        invocation = Invocation(
            "",
            metadata=Metadata(context.invocation_metadata() or ()),
            peer=context.peer(),
            time_remaining=context.time_remaining(),
            identify=_certificate_identifier(context) if self._certificates else None,
            unreadable=request.error() if isinstance(request, Undecodable) else None,
        )
        stream_id = "" if isinstance(request, Undecodable) else request.stream_id
        result = await self._core.cancel_stream(stream_id, invocation)
        if isinstance(result, Ending):
            await GrpcTransport(context).finish(result)
            return serverfn_pb2.CancelStreamResponse()
        return serverfn_pb2.CancelStreamResponse(was_running=result)

    async def list_functions(
        self,
        request: serverfn_pb2.ListFunctionsRequest | Undecodable,
        context: _ServicerContext,
    ) -> serverfn_pb2.ListFunctionsResponse:
        if isinstance(request, Undecodable):
            error = request.error()
            await context.abort(error.code, error.message)
        return self._function_list


def add_to_server(
    server: grpc.aio.Server, core: CallCore, *, verified_client_certificates: bool = False
) -> None:
    """Serve ``serverfn.v1.ServerFunctions`` on ``server`` by ``core``.

    As grpc's generated code does, the methods are registered twice: as registered methods,
    which grpc core matches to their handler as a call arrives (no handler lookup in Python
    per call, a shorter path to the first chunk), and as a generic handler, which serves a
    call that arrives before registration took effect or by a path grpc did not match."""
    servicer = _Servicer(core, verified_client_certificates=verified_client_certificates)
    handlers = {
        "Invoke": grpc.unary_stream_rpc_method_handler(
            servicer.invoke,
            request_deserializer=tolerant_parser(serverfn_pb2.InvokeRequest),
            response_serializer=serverfn_pb2.Chunk.SerializeToString,
        ),
        "ListFunctions": grpc.unary_unary_rpc_method_handler(
            servicer.list_functions,
            request_deserializer=tolerant_parser(serverfn_pb2.ListFunctionsRequest),
            response_serializer=serverfn_pb2.ListFunctionsResponse.SerializeToString,
        ),
        "CancelStream": grpc.unary_unary_rpc_method_handler(
            servicer.cancel_stream,
            request_deserializer=tolerant_parser(serverfn_pb2.CancelStreamRequest),
            response_serializer=serverfn_pb2.CancelStreamResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


def _certificate_identifier(context: _ServicerContext) -> Callable[[], Identity | None]:
    return lambda: certificate_identity(context.auth_context())
