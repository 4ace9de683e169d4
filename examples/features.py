"""The rest of the API in one app: every kind of function, validation, errors, the call
context and middleware.

    grpc-serverfn serve examples/features.py:fns
    grpc-serverfn call localhost:50051 greet '{"name": "Ada"}' -H 'authorization: Bearer demo'
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from pydantic import BaseModel, Field

from grpc_serverfn import Call, CallNext, Context, NotFound, Registry, Unauthenticated

fns = Registry()


# Middleware wraps every call and sees each chunk go by; raising rejects the call.
@fns.middleware
async def require_token(call: Call, call_next: CallNext) -> AsyncIterator[Any]:
    if call.ctx.metadata.get("authorization") != "Bearer demo":
        raise Unauthenticated("send the metadata 'authorization: Bearer demo'")
    async for chunk in call_next(call):
        yield chunk


class Greeting(BaseModel):
    name: str = Field(min_length=1)
    times: int = Field(default=1, ge=1, le=10)


# A plain function: its return value is one chunk. It runs in a worker thread.
@fns.server_fn
def greet(data: Greeting) -> str:
    """Greet someone (a sync function, so blocking here is fine)."""
    return " ".join([f"Hello, {data.name}!"] * data.times)


# A sync generator: each yield is a chunk; it is stepped in a worker thread.
@fns.server_fn
def countdown(data: int, ctx: Context) -> Iterator[int]:
    """Count down from `data` to 0, stopping early if the caller cancels."""
    for remaining in range(data, -1, -1):
        if ctx.cancelled:
            return
        yield remaining
        time.sleep(0.01)


@dataclasses.dataclass
class Order:
    id: str
    total: float


ORDERS = {"o-1": Order("o-1", 9.5)}


# An async function: raise a ServerFnError subclass to end the call with that status.
@fns.server_fn
async def get_order(data: str) -> Order:
    """Look an order up by id; NOT_FOUND when there is none."""
    order = ORDERS.get(data)
    if order is None:
        raise NotFound(f"no order {data!r}")
    return order


# An async generator with the call context: deadline, metadata, trailers.
@fns.server_fn
async def ticks(ctx: Context) -> AsyncIterator[dict[str, Any]]:
    """Tick until the caller's deadline is near, then say goodbye in a trailer."""
    tick = 0
    while (remaining := ctx.time_remaining()) is None or remaining > 0.2:
        yield {"tick": tick, "remaining": remaining}
        tick += 1
        if tick == 5 and remaining is None:
            break
        await asyncio.sleep(0.05)
    ctx.set_trailing_metadata("x-ticks", str(tick))
