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
    "GRPC_DETAILS_METADATA_KEY",
    "MAX_BATCH",
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
