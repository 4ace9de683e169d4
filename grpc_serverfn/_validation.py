"""Input validators and JSON Schemas for server functions.

A validator turns the decoded JSON input into what the handler's ``data`` parameter receives,
or raises ``InvalidArgument`` naming every bad field. It comes from the ``data`` annotation
(a pydantic model, a dataclass, a TypedDict, any type pydantic understands) or is given
explicitly as a model, a ``pydantic.TypeAdapter`` or any callable. The schema that
``ListFunctions`` reports comes from the same validator, so the two never disagree.
"""

from __future__ import annotations

import collections.abc
import logging
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pydantic
from pydantic.errors import PydanticSchemaGenerationError, PydanticUserError

from .errors import FieldViolation, InvalidArgument

__all__ = ["Output", "Validator", "output_of", "validator_for"]

logger = logging.getLogger("grpc_serverfn.registry")


@dataclass(frozen=True, slots=True)
class Validator:
    """Validates one function's input; ``schema`` is its JSON Schema (``{}`` when unknown)."""

    function_name: str
    check: Callable[[Any], Any]
    schema: dict[str, Any]

    def validate(self, raw: Any) -> Any:
        """Return the validated input, or raise ``InvalidArgument`` naming every bad field."""
        try:
            return self.check(raw)
        except pydantic.ValidationError as error:
            violations = [_violation(item) for item in error.errors(include_url=False)]
        except (ValueError, TypeError) as error:
            violations = [("", str(error) or type(error).__name__)]
        raise invalid_input(self.function_name, violations)


def invalid_input(function_name: str, violations: list[FieldViolation]) -> InvalidArgument:
    """The error for invalid input: a readable summary plus a BadRequest listing every field."""
    summary = "; ".join(f"{field or '(input)'}: {description}" for field, description in violations)
    return InvalidArgument(
        f"invalid input for {function_name!r}: {summary}", field_violations=violations
    )


def _violation(error: Any) -> FieldViolation:
    return ".".join(str(part) for part in error["loc"]), str(error["msg"])


def validator_for(function_name: str, spec: Any) -> Validator:
    """Build a validator from an annotation, a model, a ``TypeAdapter`` or a callable.

    ``typing.Any`` (or no annotation) accepts any JSON value unchanged.
    """
    if spec is Any or spec is None:
        return Validator(function_name, _identity, {})
    if isinstance(spec, pydantic.TypeAdapter):
        return Validator(function_name, spec.validate_python, _input_schema(spec))
    if isinstance(spec, type) or typing.get_origin(spec) is not None or _is_special_form(spec):
        try:
            adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(spec)
        except (PydanticSchemaGenerationError, PydanticUserError) as error:
            raise TypeError(
                f"server function {function_name!r}: cannot validate input of type"
                f" {spec!r}: {error}"
            ) from None
        return Validator(function_name, adapter.validate_python, _input_schema(adapter))
    if callable(spec):
        return Validator(function_name, spec, {})
    raise TypeError(
        f"server function {function_name!r}: validator must be a type, a pydantic.TypeAdapter"
        f" or a callable, not {spec!r}"
    )


def _identity(raw: Any) -> Any:
    return raw


def _is_special_form(spec: Any) -> bool:
    # Literal[...], Annotated[...], unions written with |, NewType and friends.
    return type(spec).__module__ in {"typing", "types", "typing_extensions"}


def _input_schema(adapter: pydantic.TypeAdapter[Any]) -> dict[str, Any]:
    try:
        return adapter.json_schema(mode="validation")
    except PydanticUserError:
        return {}


_ITERATOR_ORIGINS = {
    collections.abc.Iterator,
    collections.abc.Iterable,
    collections.abc.Generator,
    collections.abc.AsyncIterator,
    collections.abc.AsyncIterable,
    collections.abc.AsyncGenerator,
}


@dataclass(frozen=True, slots=True)
class Output:
    """What a return annotation says of each chunk: its type (``Any`` when unknown), the
    adapter that checks it and its JSON Schema (None when pydantic cannot make them)."""

    chunk_type: Any
    adapter: pydantic.TypeAdapter[Any] | None
    schema: dict[str, Any] | None


def output_of(return_annotation: Any, *, streaming: bool) -> Output:
    """The chunk type of a return annotation, with its adapter and JSON Schema.

    For a generator the chunk type is the item type of ``Iterator[X]``, ``AsyncIterator[X]``,
    ``Generator[X, ...]`` or ``AsyncGenerator[X, ...]``.
    """
    unknown = Output(Any, None, None)
    annotation = return_annotation
    if streaming:
        if typing.get_origin(annotation) not in _ITERATOR_ORIGINS:
            return unknown
        args = typing.get_args(annotation)
        if not args:
            return unknown
        annotation = args[0]
    if annotation is None or annotation is Any:
        return unknown
    try:
        adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(annotation)
        return Output(annotation, adapter, adapter.json_schema(mode="serialization"))
    except (PydanticSchemaGenerationError, PydanticUserError, TypeError) as error:
        # Not fatal (chunks are not validated against it), but the user should know why
        # ListFunctions shows no output schema.
        logger.warning("no output schema for %r: %s", annotation, str(error).splitlines()[0])
        return Output(annotation, None, None)
