"""Typed calls to the demo: by reference to its own functions, and through a generated module.

scripts/serve &                     # the demo on localhost:50051
.venv/bin/python examples/typed_client.py [TARGET]

mypy and pyright check every call below against the server's signatures: a wrong field, a
missing input or a chunk key that does not exist is an error before anything runs.
"""

from __future__ import annotations

import asyncio
import sys

import serverfns  # written by: grpc-serverfn codegen python --app examples/demo.py:fns ...
from demo import ChatInput, stream_chat, stream_data  # the server's own module

from grpc_serverfn import AsyncClient, Client


def by_reference(target: str) -> None:
    with Client(target) as client:
        for update in client.invoke(stream_data):  # update: Progress
            print(update["progress"])
        for token in client.invoke(stream_chat, ChatInput(message="hi")):  # token: ChatToken
            print(token["text"], end="")
        print()


def generated(target: str) -> None:
    with Client(target) as client:
        fns = serverfns.ServerFns(client)
        for chunk in fns.stream_chat(serverfns.StreamChatInput(message="hi")):
            print(chunk.text, end="")  # chunk: StreamChatChunk, a pydantic model
        print()


async def generated_async(target: str) -> None:
    async with AsyncClient(target) as client:
        fns = serverfns.AsyncServerFns(client)
        async for update in fns.stream_data():
            print(update.progress, update.done)


def main(target: str = "localhost:50051") -> None:
    by_reference(target)
    generated(target)
    asyncio.run(generated_async(target))


if __name__ == "__main__":
    main(*sys.argv[1:])
