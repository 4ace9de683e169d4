"""Registration-time behaviour of ``Registry.server_fn``, and what a caller then sees from a
real server: names, descriptions, methods, kinds, input validation and JSON Schemas."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pydantic import BaseModel
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from grpc_serverfn import Client, FunctionInfo, InvalidArgument, Kind, Registry
from grpc_serverfn.testing import RunningServer, run_in_thread

# --- Input and output types (module level: annotations are resolved with get_type_hints) ---


class Person(BaseModel):
    name: str
    age: int


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Movie(TypedDict):
    title: str
    year: int


def positive_int(raw: Any) -> int:
    """An explicit callable validator."""
    if not isinstance(raw, int) or isinstance(raw, bool) or raw <= 0:
        raise ValueError("must be a positive integer")
    return raw


# --- The served registry: one function per way of declaring input or output ---

fns = Registry()


@fns.server_fn
def takes_model(data: Person) -> str:
    return f"{type(data).__name__}:{data.name}:{data.age}"


@fns.server_fn
def takes_dataclass(data: Point) -> str:
    return f"{type(data).__name__}:{data.x + data.y}"


@fns.server_fn
def takes_typeddict(data: Movie) -> str:
    return f"{type(data).__name__}:{data['title']}:{type(data['year']).__name__}"


@fns.server_fn
def takes_int(data: int) -> int:
    return data + 1


@fns.server_fn
def takes_int_list(data: list[int]) -> int:
    return sum(data)


@fns.server_fn(validator=Person)
def explicit_model(data):  # type: ignore[no-untyped-def]  # the validator gives the type
    return f"{type(data).__name__}:{data.name}"


@fns.server_fn(validator=positive_int)
def explicit_callable(data: Any) -> int:
    return data * 10


@fns.server_fn
def takes_any(data: Any) -> Any:
    return data


@fns.server_fn
def with_default(data: int = 7) -> int:
    return data


@fns.server_fn
def without_input() -> str:
    return "ok"


@fns.server_fn
async def stream_people() -> AsyncIterator[Person]:
    yield Person(name="a", age=1)


@fns.server_fn
def stream_ints() -> Iterator[int]:
    yield 1


@fns.server_fn
async def returns_movie() -> Movie:
    return {"title": "t", "year": 2000}


@fns.server_fn
def unannotated():  # type: ignore[no-untyped-def]
    return 1


@fns.server_fn
async def unannotated_stream():  # type: ignore[no-untyped-def]
    yield 1


@fns.server_fn
def documented() -> None:
    """Says what it does.

    In more than one line.
    """


@fns.server_fn(name="custom.name-1/x", description="An explicit description.", method="POST")
def renamed() -> None:
    """This docstring is replaced by the explicit description."""


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with run_in_thread(fns) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[Client]:
    with server.client(timeout=10) as connected:
        yield connected


@pytest.fixture
def listed(client: Client) -> dict[str, FunctionInfo]:
    return {info.name: info for info in client.functions()}


def invalid(client: Client, function: str, data: Any = None) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as raised:
        client.call(function, data)
    return raised.value


def violated_fields(error: InvalidArgument) -> set[str]:
    return {field for field, _ in error.field_violations}


# --- The decorator returns the function itself ---


async def test_decorator_returns_the_original_function_still_callable() -> None:
    registry = Registry()

    def plain(data: int) -> int:
        return data * 2

    async def coroutine() -> str:
        return "done"

    async def async_generator(data: int) -> AsyncIterator[int]:
        for i in range(data):
            yield i

    def generator() -> Iterator[str]:
        yield "a"
        yield "b"

    assert registry.server_fn(plain) is plain
    assert registry.server_fn(name="co", method="POST", description="d")(coroutine) is coroutine
    assert registry.server_fn(async_generator) is async_generator
    assert registry.server_fn()(generator) is generator

    assert plain(21) == 42
    assert await coroutine() == "done"
    assert [i async for i in async_generator(3)] == [0, 1, 2]
    assert list(generator()) == ["a", "b"]
    assert registry["plain"].fn is plain
    assert registry["co"].fn is coroutine


def test_decorated_module_level_functions_stay_callable() -> None:
    assert takes_int(1) == 2
    assert with_default() == 7
    assert takes_model(Person(name="x", age=3)) == "Person:x:3"


# --- Names, descriptions and methods as ListFunctions shows them ---


def test_name_defaults_to___name___and_description_to_the_docstring(
    listed: dict[str, FunctionInfo],
) -> None:
    info = listed["documented"]
    assert info.description == "Says what it does.\n\nIn more than one line."
    assert info.method == "GET"
    assert listed["without_input"].description == ""


def test_name_description_and_method_options_show_up_in_list_functions(
    listed: dict[str, FunctionInfo], client: Client
) -> None:
    assert "renamed" not in listed
    info = listed["custom.name-1/x"]
    assert info.description == "An explicit description."
    assert info.method == "POST"
    assert client.call("custom.name-1/x") is None


def test_list_functions_is_sorted_by_name_and_lists_every_function(client: Client) -> None:
    names = [info.name for info in client.functions()]
    assert names == sorted(names)
    assert set(names) == {function.name for function in fns}


# --- Registration errors ---


def test_duplicate_names_are_refused_at_registration() -> None:
    registry = Registry()

    @registry.server_fn
    def thing() -> int:
        return 1

    def other() -> int:
        return 2

    with pytest.raises(ValueError, match=r"'thing'.*already registered"):
        registry.server_fn(name="thing")(other)
    with pytest.raises(ValueError, match="already registered"):
        registry.server_fn(thing)
    assert registry["thing"].fn is thing
    assert len(registry) == 1


@pytest.mark.parametrize("name", ["", "1starts_with_digit", "has space", "semi;colon", "é", "-x"])
def test_invalid_names_are_refused(name: str) -> None:
    registry = Registry()

    def fn() -> None:
        return None

    with pytest.raises(ValueError, match="invalid server function name"):
        registry.server_fn(name=name)(fn)
    assert name not in registry


def test_a_lambda_needs_an_explicit_name() -> None:
    registry = Registry()
    with pytest.raises(ValueError, match="<lambda>"):
        registry.server_fn(lambda: 1)
    registry.server_fn(name="one")(lambda: 1)
    assert registry["one"].kind is Kind.FUNCTION


@pytest.mark.parametrize("method", ["PUT", "DELETE", "", "FETCH"])
def test_a_method_other_than_get_or_post_is_refused(method: str) -> None:
    registry = Registry()

    def fn() -> None:
        return None

    with pytest.raises(ValueError, match="method must be 'GET' or 'POST'"):
        registry.server_fn(method=method)(fn)  # type: ignore[call-overload]


def test_an_unexpected_required_parameter_is_refused_naming_it() -> None:
    registry = Registry()

    def needs_x(x):  # type: ignore[no-untyped-def]
        return x

    def data_and_extra(data: int, extra: str) -> str:
        return extra

    with pytest.raises(TypeError, match="unexpected parameter 'x'"):
        registry.server_fn(needs_x)
    with pytest.raises(TypeError, match="unexpected parameter 'extra'"):
        registry.server_fn(data_and_extra)
    assert len(registry) == 0


def test_optional_and_variadic_extra_parameters_are_accepted() -> None:
    registry = Registry()

    def flexible(data: int, scale: int = 2, *args: Any, **kwargs: Any) -> int:
        return data * scale

    registry.server_fn(flexible)
    assert registry["flexible"].takes_input


def test_a_validator_without_a_data_parameter_is_refused() -> None:
    registry = Registry()

    def no_data() -> None:
        return None

    with pytest.raises(TypeError, match="no 'data' parameter"):
        registry.server_fn(validator=Person)(no_data)
    assert "no_data" not in registry


# --- Kinds ---


def test_each_kind_of_function_is_classified_once_at_registration() -> None:
    registry = Registry()

    @registry.server_fn
    def plain() -> int:
        return 1

    @registry.server_fn
    async def coroutine() -> int:
        return 1

    @registry.server_fn
    def generator() -> Iterator[int]:
        yield 1

    @registry.server_fn
    async def async_generator() -> AsyncIterator[int]:
        yield 1

    expected = {
        "plain": (Kind.FUNCTION, False),
        "coroutine": (Kind.COROUTINE, False),
        "generator": (Kind.GENERATOR, True),
        "async_generator": (Kind.ASYNC_GENERATOR, True),
    }
    for name, (kind, streaming) in expected.items():
        assert registry[name].kind is kind
        assert registry[name].streaming is streaming
        assert kind.streaming is streaming


def test_streaming_flag_shows_up_in_list_functions(listed: dict[str, FunctionInfo]) -> None:
    assert listed["stream_people"].streaming is True
    assert listed["stream_ints"].streaming is True
    assert listed["returns_movie"].streaming is False
    assert listed["takes_int"].streaming is False


# --- Frozen once served ---


def test_the_registry_is_frozen_once_a_server_starts() -> None:
    registry = Registry()

    @registry.server_fn
    def first() -> int:
        return 1

    assert not registry.frozen

    def late() -> int:
        return 2

    with run_in_thread(registry) as running:
        assert registry.frozen
        with pytest.raises(RuntimeError, match="frozen"):
            registry.server_fn(late)
        with pytest.raises(RuntimeError, match="frozen"):
            registry.add(late, name="late")
        with running.client(timeout=10) as client:
            assert [info.name for info in client.functions()] == ["first"]
            assert client.call("first") == 1
    assert "late" not in registry


# --- Input validators inferred from the `data` annotation, through a real server ---


def test_pydantic_model_input(client: Client) -> None:
    assert client.call("takes_model", {"name": "ada", "age": 36}) == "Person:ada:36"
    error = invalid(client, "takes_model", {"name": 5, "age": "old"})
    assert violated_fields(error) == {"name", "age"}
    assert "takes_model" in error.message


def test_dataclass_input(client: Client) -> None:
    assert client.call("takes_dataclass", {"x": 1, "y": 2}) == "Point:3"
    error = invalid(client, "takes_dataclass", {"x": "one", "y": [2]})
    assert violated_fields(error) == {"x", "y"}


def test_typeddict_input(client: Client) -> None:
    assert client.call("takes_typeddict", {"title": "Up", "year": "2009"}) == "dict:Up:int"
    error = invalid(client, "takes_typeddict", {"title": 1, "year": "soon"})
    assert violated_fields(error) == {"title", "year"}


def test_missing_typeddict_keys_are_each_named(client: Client) -> None:
    error = invalid(client, "takes_typeddict", {})
    assert violated_fields(error) == {"title", "year"}


def test_plain_type_input(client: Client) -> None:
    assert client.call("takes_int", 41) == 42
    assert client.call("takes_int", "41") == 42  # pydantic's lax mode: the handler gets an int
    error = invalid(client, "takes_int", "forty-one")
    assert violated_fields(error) == {""}
    assert "(input)" in error.message


def test_generic_type_input(client: Client) -> None:
    assert client.call("takes_int_list", [1, "2", 3]) == 6
    error = invalid(client, "takes_int_list", ["a", 2, "c"])
    assert violated_fields(error) == {"0", "2"}


def test_explicit_model_validator(client: Client) -> None:
    assert client.call("explicit_model", {"name": "bo", "age": 9}) == "Person:bo"
    error = invalid(client, "explicit_model", {"name": [], "age": None})
    assert violated_fields(error) == {"name", "age"}


def test_explicit_callable_validator(client: Client) -> None:
    assert client.call("explicit_callable", 4) == 40
    error = invalid(client, "explicit_callable", -1)
    assert error.field_violations == [("", "must be a positive integer")]
    assert "must be a positive integer" in error.message


def test_any_input_is_passed_through_unchanged(client: Client) -> None:
    value = {"a": [1, 2.5, None, True], "b": {"c": "d"}}
    assert client.call("takes_any", value) == value


def test_missing_required_input_is_invalid_argument(client: Client) -> None:
    for function in ("takes_model", "takes_int", "explicit_callable"):
        error = invalid(client, function)
        assert "input is required" in error.message, function
        assert error.field_violations == [("", "input is required")]


def test_a_data_parameter_with_a_default_receives_it_when_no_input_is_sent(
    client: Client,
) -> None:
    assert client.call("with_default") == 7
    assert client.call("with_default", 3) == 3


def test_input_sent_to_a_function_without_data_is_invalid_argument(client: Client) -> None:
    error = invalid(client, "without_input", {"unexpected": True})
    assert violated_fields(error) == {""}
    assert "takes no input" in error.message
    assert client.call("without_input") == "ok"


# --- JSON Schemas and input flags in ListFunctions ---


def test_input_schema_comes_from_the_model(listed: dict[str, FunctionInfo]) -> None:
    for name in ("takes_model", "explicit_model"):
        info = listed[name]
        assert info.takes_input
        assert info.input_required
        schema = info.input_schema
        assert schema is not None
        assert set(schema["properties"]) == {"name", "age"}
        assert schema["properties"]["age"]["type"] == "integer"
        assert sorted(schema["required"]) == ["age", "name"]


def test_input_schema_of_a_dataclass_and_a_typeddict(listed: dict[str, FunctionInfo]) -> None:
    point = listed["takes_dataclass"].input_schema
    movie = listed["takes_typeddict"].input_schema
    assert point is not None
    assert movie is not None
    assert set(point["properties"]) == {"x", "y"}
    assert sorted(point["required"]) == ["x", "y"]
    assert set(movie["properties"]) == {"title", "year"}
    assert sorted(movie["required"]) == ["title", "year"]


def test_input_schema_of_plain_types(listed: dict[str, FunctionInfo]) -> None:
    assert listed["takes_int"].input_schema == {"type": "integer"}
    assert listed["takes_int_list"].input_schema == {
        "type": "array",
        "items": {"type": "integer"},
    }


def test_input_flags_and_schema_presence(listed: dict[str, FunctionInfo]) -> None:
    no_input = listed["without_input"]
    assert (no_input.takes_input, no_input.input_required, no_input.input_schema) == (
        False,
        False,
        None,
    )
    defaulted = listed["with_default"]
    assert (defaulted.takes_input, defaulted.input_required) == (True, False)
    assert defaulted.input_schema == {"type": "integer"}
    # "An empty object means any JSON value is accepted."
    assert listed["takes_any"].input_schema == {}
    assert listed["explicit_callable"].input_schema == {}


def test_output_schema_from_an_async_iterator_of_a_model(
    listed: dict[str, FunctionInfo],
) -> None:
    schema = listed["stream_people"].output_schema
    assert schema is not None
    assert set(schema["properties"]) == {"name", "age"}
    assert sorted(schema["required"]) == ["age", "name"]


def test_output_schema_from_an_iterator_of_int(listed: dict[str, FunctionInfo]) -> None:
    assert listed["stream_ints"].output_schema == {"type": "integer"}


def test_output_schema_from_a_typeddict_return(listed: dict[str, FunctionInfo]) -> None:
    schema = listed["returns_movie"].output_schema
    assert schema is not None
    assert set(schema["properties"]) == {"title", "year"}


def test_output_schema_is_none_when_not_annotated(listed: dict[str, FunctionInfo]) -> None:
    assert listed["unannotated"].output_schema is None
    assert listed["unannotated_stream"].output_schema is None
    assert listed["takes_any"].output_schema is None
