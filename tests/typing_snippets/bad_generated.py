# Each mistake marked "# error" must be a type error, for mypy --strict and for pyright.
from __future__ import annotations

from typed_serverfns import Address, AreasInput, GreetInput, ServerFns


def mistakes(fns: ServerFns) -> None:
    fns.gret(GreetInput(name="Ada", home=Address(street="1 rue")))  # error: no such function
    fns.greet(GreetInput(home=Address(street="1 rue")))  # error: no name
    fns.greet(GreetInput(name=42, home=Address(street="1 rue")))  # error
    fns.greet()  # error: no input
    fns.get_order(42)  # error
    fns.progress(1)  # error: it takes none
    for greeting in fns.greet(GreetInput(name="Ada", home=Address(street="1 rue"))):
        print(greeting.txt)  # error
    for area in fns.areas(AreasInput(shapes=[])):
        print(area.size)  # error
    print(fns.get_order("A1").price)  # error
