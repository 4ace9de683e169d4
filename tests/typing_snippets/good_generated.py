# Correct calls through a module written by `grpc-serverfn codegen python` for tests/typed_app.
from __future__ import annotations

from typing import Any, assert_type

from typed_serverfns import (
    Address,
    AreasChunk,
    AreasInput,
    AsyncServerFns,
    Circle,
    Colour,
    GetOrderChunk,
    GreetChunk,
    GreetInput,
    ProgressChunk,
    ServerFns,
    get_order,
)

from grpc_serverfn import AsyncChunkStream, ChunkStream, Client


def sync(fns: ServerFns) -> None:
    for greeting in fns.greet(GreetInput(name="Ada", home=Address(street="1 rue"))):
        assert_type(greeting, GreetChunk)
        print(greeting.text, greeting.home.postCode, greeting.colour is Colour.green)
    assert_type(fns.get_order("A1"), GetOrderChunk)
    assert_type(fns.countdown(3), ChunkStream[int])
    assert_type(fns.areas(AreasInput(shapes=[Circle(radius=1)])), ChunkStream[AreasChunk])
    assert_type(fns.progress(), ChunkStream[ProgressChunk])
    assert_type(fns.maybe_total(), float | None)
    assert_type(fns.anything({"any": "json"}), Any)


def by_reference(client: Client) -> None:
    assert_type(client.call(get_order, "A1"), GetOrderChunk)


async def asynchronous(fns: AsyncServerFns) -> None:
    async for area in fns.areas(AreasInput(shapes=[])):
        assert_type(area, AreasChunk)
    assert_type(await fns.get_order("A1"), GetOrderChunk)
    assert_type(fns.progress(), AsyncChunkStream[ProgressChunk])
