"""Resumable streams: a long reply that survives a dropped connection.

    grpc-serverfn serve examples/resumable.py:fns
    python examples/resumable.py localhost:50051

With several processes or replicas, share the stream store:
``serve ... --stream-store redis://localhost:6379/0``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

from pydantic import BaseModel

from grpc_serverfn import Client, Registry

fns = Registry()
WORD_SECONDS = float(os.environ.get("DEMO_TOKEN_SECONDS", "0.05"))


class Prompt(BaseModel):
    message: str


# resumable=True: chunks are stored as produced, the handler runs on when the caller drops,
# and any caller with the stream id can pick the stream up where it left off.
@fns.server_fn(method="POST", resumable=True)
async def long_reply(data: Prompt) -> AsyncIterator[dict[str, str]]:
    """Stream a long reply, word by word."""
    reply = f"You said {data.message!r}. Here is a long answer, one word at a time."
    for word in reply.split():
        yield {"text": word + " "}
        await asyncio.sleep(WORD_SECONDS)


def read_in_two_goes(target: str) -> str:
    """Read three words, leave, and come back for the rest with the stream id."""
    with Client(target) as client:
        stream = client.invoke("long_reply", {"message": "hi"})
        # A dropped connection here would be resumed by the client on its own.
        first = [next(stream)["text"] for _ in range(3)]
        stream_id = stream.stream_id()  # announced by resumable functions only
        assert stream_id is not None
        stream.cancel()  # the caller leaves; the server keeps producing
        # Later, from any client (on any replica sharing the stream store):
        rest = [chunk["text"] for chunk in client.resume(stream_id, next_seq=3)]
    return "".join(first + rest)


if __name__ == "__main__":
    print(read_in_two_goes(sys.argv[1] if len(sys.argv) > 1 else "localhost:50051"))
