"""Server functions whose types cover what codegen must get right: ``$defs`` and nested
models, enums, optionals, defaults, unions, lists, scalars as input and as chunk, no input, no
output annotation; and one of each kind (def, async def, generators, a ``ctx`` parameter).

Functions are called by reference (tests/test_typed_calls.py) and through generated modules
(tests/test_codegen.py).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from grpc_serverfn import Context, Registry

fns = Registry()


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Address(BaseModel):
    street: str
    city: str = "Paris"
    post_code: str = Field(default="", alias="postCode")  # JSON says postCode, both ways


class Person(BaseModel):
    name: str = Field(min_length=1)
    age: int | None = None
    tags: list[str] = []
    home: Address
    previous: list[Address] = []
    favourite: Colour = Colour.GREEN


class Greeting(TypedDict):
    text: str
    colour: Colour
    home: Address


@fns.server_fn
async def greet(data: Person) -> AsyncIterator[Greeting]:
    """Greet a person once per tag (once when none)."""
    for tag in data.tags or [""]:
        yield {"text": f"Hello {data.name}{tag}", "colour": data.favourite, "home": data.home}


@dataclasses.dataclass
class Order:
    id: str
    total: float
    lines: list[str]


@fns.server_fn
def get_order(data: str) -> Order:
    """An order by id (a scalar input, a dataclass value)."""
    return Order(id=data, total=9.5, lines=["tea", "cake"])


@fns.server_fn
def countdown(data: int) -> Iterator[int]:
    """data, data-1, ..., 0 from a sync generator (scalar input and chunk)."""
    yield from range(data, -1, -1)


class Circle(BaseModel):
    kind: Literal["circle"] = "circle"
    radius: float


class Square(BaseModel):
    kind: Literal["square"] = "square"
    side: float


class Shapes(BaseModel):
    shapes: list[Circle | Square]
    scale: float = 1.0


class Area(BaseModel):
    shape: Circle | Square
    area: float


@fns.server_fn
async def areas(data: Shapes, ctx: Context) -> AsyncIterator[Area]:
    """The area of each shape (unions, a ctx parameter)."""
    for shape in data.shapes:
        size = 3.0 * shape.radius**2 if isinstance(shape, Circle) else shape.side**2
        yield Area(shape=shape, area=size * data.scale)


class Progress(TypedDict):
    progress: int
    done: bool | None


@fns.server_fn
async def progress() -> AsyncIterator[Progress]:
    """0, 50, 100 (no input)."""
    for step in (0, 50, 100):
        yield {"progress": step, "done": step == 100 or None}


@fns.server_fn
async def anything(data: Any):  # type: ignore[no-untyped-def]  # no output annotation, on purpose
    """Echo the input (unknown input and output)."""
    return data


@fns.server_fn
async def maybe_total(data: list[float] | None = None) -> float | None:
    """The sum of the numbers, or None without input (an optional input with a default)."""
    return None if data is None else sum(data)


@fns.server_fn
def liar() -> Iterator[Any]:
    """Declares nothing but sends chunks unlike greet's (for the decode error)."""
    yield {"text": 42}
