"""The wire contract's constants, in one place for the server, its transports and the clients:
the service's name, the metadata keys the calls carry, the status numbers and the batch bounds.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from ._proto.serverfn.v1 import serverfn_pb2

__all__ = [
    "CODE_BY_NUMBER",
    "COALESCE_MAX_BATCH",
    "ERROR_DOMAIN",
    "NOT_STARTED_REASONS",
    "GRPC_DETAILS_METADATA_KEY",
    "MAX_BATCH",
    "SERVER_AT_CAPACITY",
    "SERVER_SHUTTING_DOWN",
    "SERVICE_NAME",
    "STREAM_ID_METADATA_KEY",
]

SERVICE_NAME: str = serverfn_pb2.DESCRIPTOR.services_by_name["ServerFunctions"].full_name
"""``serverfn.v1.ServerFunctions``."""

STREAM_ID_METADATA_KEY = "serverfn-stream-id"
"""The initial-metadata key under which a resumable call announces its stream id."""

GRPC_DETAILS_METADATA_KEY = "grpc-status-details-bin"
"""The trailer that carries the ``google.rpc.Status`` with an error's details."""

MAX_BATCH = 1024
"""The most chunks the server packs into one message, whatever the caller asks for."""

COALESCE_MAX_BATCH = MAX_BATCH
"""How many chunks the clients accept packed into one message when coalescing (the default)."""

CODE_BY_NUMBER: Mapping[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}
"""gRPC status codes by their number on the wire."""

ERROR_DOMAIN = "serverfn.v1"
"""The ``google.rpc.ErrorInfo`` domain of the reasons below."""

SERVER_AT_CAPACITY = "SERVER_AT_CAPACITY"
"""ErrorInfo reason: refused (RESOURCE_EXHAUSTED) at the server's concurrent-call limit."""

SERVER_SHUTTING_DOWN = "SERVER_SHUTTING_DOWN"
"""ErrorInfo reason: refused (UNAVAILABLE) by a server that is shutting down."""

NOT_STARTED_REASONS = frozenset({SERVER_AT_CAPACITY, SERVER_SHUTTING_DOWN})
"""The reasons of a call refused before its server function ran: any call so refused may be
made again, whatever its function does."""
