"""Calls by reference: typed from the server function itself, checked by mypy and pyright,
and at run time sending its name and validating its chunks into its chunk type."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from grpc_serverfn import AsyncClient, Client, ServerFnRef, UnexpectedChunk
from grpc_serverfn.testing import RunningServer, run_in_thread
from tests import typed_app
from tests.typed_app import (
    Address,
    Area,
    Circle,
    Greeting,
    Person,
    Shapes,
    Square,
    anything,
    areas,
    countdown,
    get_order,
    greet,
    maybe_total,
    progress,
)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with run_in_thread(typed_app.fns) as running:
        yield running


ADA = Person(name="Ada", tags=["!", "?"], home=Address(street="1 rue", postCode="75001"))


def test_a_call_by_reference_sends_the_name_and_decodes_each_kind(server: RunningServer) -> None:
    with Client(server.target) as client:
        greetings = list(client.invoke(greet, ADA))
        assert [g["text"] for g in greetings] == ["Hello Ada!", "Hello Ada?"]
        # TypedDict chunks stay dicts, their values validated: an enum, a model (by alias).
        assert greetings[0]["colour"] is typed_app.Colour.GREEN
        assert greetings[0]["home"] == Address(street="1 rue", postCode="75001")
        order = client.call(get_order, "A1")
        assert order == typed_app.Order(id="A1", total=9.5, lines=["tea", "cake"])
        assert dataclasses.is_dataclass(order)
        assert list(client.invoke(countdown, 2)) == [2, 1, 0]
        shapes = Shapes(shapes=[Circle(radius=1), Square(side=2)], scale=2)
        assert list(client.invoke(areas, shapes)) == [
            Area(shape=Circle(radius=1), area=6.0),
            Area(shape=Square(side=2), area=8.0),
        ]
        assert [p["progress"] for p in client.invoke(progress)] == [0, 50, 100]
        assert client.call(anything, {"any": ["json"]}) == {"any": ["json"]}
        assert client.call(maybe_total) is None
        assert client.call(maybe_total, [1.5, 2]) == 3.5


async def test_the_async_client_calls_by_reference_too(server: RunningServer) -> None:
    async with AsyncClient(server.target) as client:
        chunks = [chunk async for chunk in client.invoke(areas, Shapes(shapes=[Square(side=3)]))]
        assert chunks == [Area(shape=Square(side=3), area=9.0)]
        assert await client.call(get_order, "B2") == typed_app.Order("B2", 9.5, ["tea", "cake"])
        assert [p["progress"] async for p in client.invoke(progress)] == [0, 50, 100]


def test_the_input_may_be_plain_data_and_decode_false_keeps_json(server: RunningServer) -> None:
    plain: Any = {"shapes": [{"kind": "circle", "radius": 1}]}
    with Client(server.target) as client:
        assert list(client.invoke(areas, plain)) == [Area(shape=Circle(radius=1), area=3.0)]
        raw = list(client.invoke(areas, plain, decode=False))
    assert raw == [{"shape": {"kind": "circle", "radius": 1.0}, "area": 3.0}]


def test_a_chunk_unlike_the_annotation_raises_unexpected_chunk(server: RunningServer) -> None:
    # `liar` sends {"text": 42}; a caller that believes it sends Greeting finds out, with the
    # function and every field that differs named.
    believed: ServerFnRef[None, Greeting] = ServerFnRef("liar", Greeting)
    with Client(server.target) as client, pytest.raises(UnexpectedChunk) as caught:
        list(client.invoke(believed))
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.function == "liar"
    assert error.chunk == {"text": 42}
    fields = dict(error.field_violations)
    assert set(fields) == {"text", "colour", "home"}
    assert "string" in fields["text"]
    assert str(error).startswith("'liar' sent a chunk that is not a Greeting: ")


async def test_the_async_client_raises_unexpected_chunk_too(server: RunningServer) -> None:
    believed: ServerFnRef[None, int] = ServerFnRef("liar", int)
    async with AsyncClient(server.target) as client:
        with pytest.raises(UnexpectedChunk, match=r"'liar' sent a chunk that is not a int"):
            await client.call(believed)


def test_a_function_that_was_never_registered_is_refused_before_any_call() -> None:
    def plain(data: int) -> int:
        return data

    with Client("localhost:1") as client, pytest.raises(TypeError, match="not a registered"):
        client.invoke(plain, 1)  # type: ignore[call-overload]


def test_the_decorated_function_stays_callable_and_knows_its_name() -> None:
    assert get_order("Z") == typed_app.Order("Z", 9.5, ["tea", "cake"])
    assert list(countdown(1)) == [1, 0]
    assert greet.__serverfn__.name == "greet"
    assert greet.__serverfn__.chunk_type is Greeting
