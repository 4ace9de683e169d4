"""Call the demo app with AsyncClient, two streams at once.

scripts/serve &                     # the demo on localhost:50051
.venv/bin/python examples/async_client.py [TARGET]
"""

from __future__ import annotations

import asyncio
import sys

from grpc_serverfn import AsyncClient


async def chat(client: AsyncClient, message: str) -> str:
    reply = []
    async for chunk in client.invoke("stream_chat", {"message": message}):
        reply.append(chunk["text"])
    return "".join(reply)


async def main(target: str = "localhost:50051") -> None:
    async with AsyncClient(target) as client:
        async for chunk in client.invoke("stream_chat", {"message": "hi"}):
            print(chunk["text"], end="", flush=True)
        print()

        # Streams are independent: run several at once on one channel.
        first, second = await asyncio.gather(chat(client, "one"), chat(client, "two"))
        print(first)
        print(second)

        for info in await client.functions():
            print(f"{info.name}: {info.method}, {'stream' if info.streaming else 'unary'}")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
