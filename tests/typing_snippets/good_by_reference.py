# Correct calls by reference: mypy --strict and pyright find nothing, and infer each type.
from __future__ import annotations

from typing import assert_type

from grpc_serverfn import AsyncChunkStream, AsyncClient, ChunkStream, Client
from tests.typed_app import (
    Address,
    Area,
    Circle,
    Greeting,
    Order,
    Person,
    Progress,
    Shapes,
    areas,
    countdown,
    get_order,
    greet,
    maybe_total,
    progress,
)


def sync(client: Client) -> None:
    for greeting in client.invoke(greet, Person(name="Ada", home=Address(street="1 rue"))):
        assert_type(greeting, Greeting)
        print(greeting["text"], greeting["home"].city)
    assert_type(client.call(get_order, "A1"), Order)
    assert_type(client.invoke(countdown, 3), ChunkStream[int])
    assert_type(client.invoke(areas, Shapes(shapes=[Circle(radius=1)])), ChunkStream[Area])
    assert_type(client.invoke(progress), ChunkStream[Progress])
    assert_type(client.call(maybe_total), float | None)
    assert_type(client.call(maybe_total, [1.0]), float | None)
    assert_type(client.invoke("greet", {"name": "Ada"}), ChunkStream)


async def asynchronous(client: AsyncClient) -> None:
    async for area in client.invoke(areas, Shapes(shapes=[])):
        assert_type(area, Area)
        print(area.area)
    assert_type(await client.call(get_order, "A1"), Order)
    assert_type(client.invoke(progress), AsyncChunkStream[Progress])
