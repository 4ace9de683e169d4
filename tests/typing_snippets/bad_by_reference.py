# Each mistake marked "# error" must be a type error, for mypy --strict and for pyright.
from __future__ import annotations

from grpc_serverfn import Client
from tests.typed_app import Address, Person, Shapes, areas, get_order, greet, progress


def not_registered(data: Person) -> str:
    return data.name


def mistakes(client: Client) -> None:
    client.invoke(not_registered, Person(name="Ada", home=Address(street="1 rue")))  # error
    client.invoke(greet, Person(home=Address(street="1 rue")))  # error: no name
    client.invoke(greet, Person(name=42, home=Address(street="1 rue")))  # error
    client.invoke(greet, {"name": "Ada"})  # error: a dict is not a Person
    client.invoke(greet)  # error: no input
    client.call(get_order, 42)  # error
    client.invoke(progress, 1)  # error: it takes none
    for greeting in client.invoke(greet, Person(name="Ada", home=Address(street="1 rue"))):
        print(greeting["txt"])  # error
    for area in client.invoke(areas, Shapes(shapes=[])):
        print(area.size)  # error
    print(client.call(get_order, "A1").price)  # error
