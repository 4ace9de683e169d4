"""An in-memory transport for the call core: real calls, driven without a socket.

It implements the core's ``Transport`` protocol the way a second adapter would, so the tests
that use it prove that the core needs nothing from grpc.aio. As grpc does, it runs each call in
a task of its own, cancels that task when the caller cancels or its deadline passes, and from
then on refuses to send.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc

from grpc_serverfn import _codec as codec
from grpc_serverfn._call import CallCore
from grpc_serverfn._proto.serverfn.v1 import serverfn_pb2
from grpc_serverfn._transport import Ending, Invocation, ResumePoint
from grpc_serverfn.context import Metadata, MetadataValue


class MemoryTransport:
    """One call's connection, kept in memory: what was sent, and how it ended."""

    def __init__(self, *, on_message: asyncio.Event | None = None) -> None:
        self.headers: list[tuple[str, str]] = []
        self.messages: list[serverfn_pb2.Chunk] = []
        self.ending: Ending | None = None
        self.gone = False
        self.on_message = on_message or asyncio.Event()

    async def send(self, message: serverfn_pb2.Chunk) -> None:
        if self.gone:
            raise ConnectionResetError("the caller is gone")
        await asyncio.sleep(0)  # a real transport yields to the loop on each write
        self.messages.append(message)
        self.on_message.set()

    async def send_headers(self, headers: Sequence[tuple[str, str]]) -> None:
        self.headers.extend(headers)

    async def finish(self, ending: Ending) -> None:
        self.ending = ending

    def caller_gone(self) -> bool:
        return self.gone

    # --- what a test reads ----------------------------------------------------------------

    @property
    def chunks(self) -> list[Any]:
        """Every chunk received, decoded, batches unpacked."""
        values: list[Any] = []
        for message in self.messages:
            kind = message.WhichOneof("payload")
            if kind == "json":
                values.append(codec.decode_json(message.json))
            elif kind == "value":
                values.append(codec.from_value(message.value))
            elif kind == "batch":
                values += [codec.decode_json(text) for text in message.batch.json]
                values += [codec.from_value(value) for value in message.batch.values]
        return values

    @property
    def seqs(self) -> list[int]:
        return [message.seq for message in self.messages]

    @property
    def code(self) -> grpc.StatusCode | None:
        return None if self.ending is None else self.ending.code

    def trailer(self, key: str) -> MetadataValue | None:
        assert self.ending is not None
        return next((value for name, value in self.ending.trailers if name == key), None)


class MemoryCall:
    """A call in flight on a MemoryTransport: its task, and the caller's controls."""

    def __init__(self, task: asyncio.Task[None], transport: MemoryTransport) -> None:
        self.task = task
        self.transport = transport

    def cancel(self) -> None:
        """The caller cancels: the transport stops taking messages and cancels the call."""
        self.transport.gone = True
        self.task.cancel()

    async def done(self) -> MemoryTransport:
        """Wait for the call's end, however it ended."""
        await asyncio.wait((self.task,))
        return self.transport


def start(
    core: CallCore,
    function: str,
    data: Any = None,
    *,
    max_batch: int = 1,
    timeout: float | None = None,
    resume: ResumePoint | None = None,
    metadata: Sequence[tuple[str, MetadataValue]] = (),
) -> MemoryCall:
    """Start a call as a transport would: parsed, in a task of its own, with its deadline."""
    invocation = Invocation(
        function,
        max_batch=max_batch,
        resume=resume,
        metadata=Metadata(metadata),
        peer="memory:test",
        time_remaining=timeout,
        protocol="memory",
    )
    if data is not None:
        invocation.input, invocation.input_kind = codec.encode_json(data), "json"
    transport = MemoryTransport()
    loop = asyncio.get_running_loop()
    expires_at = None if timeout is None else loop.time() + timeout

    async def run() -> None:
        # As grpc does, the time left is read when the handler starts, not when the call was
        # made: a loaded loop may start the task late.
        if expires_at is not None:
            invocation.time_remaining = max(0.0, expires_at - loop.time())
        await core.invoke(invocation, transport)

    task = asyncio.create_task(run())
    if expires_at is not None:

        def expire() -> None:
            transport.gone = True
            task.cancel()

        handle = loop.call_at(expires_at, expire)
        task.add_done_callback(lambda _: handle.cancel())
    return MemoryCall(task, transport)


async def call(core: CallCore, function: str, data: Any = None, **options: Any) -> MemoryTransport:
    """Make a call and wait for its end."""
    return await start(core, function, data, **options).done()
