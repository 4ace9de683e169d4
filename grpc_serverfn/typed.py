"""Calling server functions by reference, typed from their own signatures.

``@fns.server_fn`` marks the function it returns with a ``ServerFnRef`` (its registered name and
chunk type), so the clients can take the function itself in place of its name::

    for token in client.invoke(stream_chat, ChatInput(message="hi")):  # token: ChatToken
        print(token["text"])
    order = client.call(get_order, "A1")                                 # order: Order

``ServerFn[InputT, ChunkT]`` is what the clients' overloads accept: mypy and pyright infer the
chunk type, reject an input of another type, and reject a function that was never registered.
Chunks come back decoded into the return annotation's type (validated with pydantic), or the
call raises ``UnexpectedChunk`` naming the function and the fields that differ.
``grpc-serverfn codegen python`` writes ``ServerFnRef`` objects for a server whose code the
caller cannot import.
"""

from __future__ import annotations

from typing import Any, Generic, Protocol

import pydantic
from pydantic.errors import PydanticSchemaGenerationError, PydanticUserError
from typing_extensions import TypeVar

from .errors import UnexpectedChunk

__all__ = ["ServerFn", "ServerFnRef"]

InputT = TypeVar("InputT", contravariant=True, default=Any)
ChunkT = TypeVar("ChunkT", covariant=True, default=Any)


class ServerFnRef(Generic[InputT, ChunkT]):
    """A server function as a client calls it: its registered ``name``, the type of its input
    and of its chunks (``chunk_type``; ``Any``: not decoded).

    ``ServerFnRef[ChatInput, ChatToken]("stream_chat", ChatToken)`` can be passed to
    ``invoke``/``call`` like the decorated function itself.
    """

    __slots__ = ("_adapter", "chunk_type", "name")

    def __init__(
        self, name: str, chunk_type: Any = Any, adapter: pydantic.TypeAdapter[Any] | None = None
    ) -> None:
        self.name = name
        self.chunk_type = chunk_type
        self._adapter = adapter  # built on first use when not given (the registry has one)

    @property
    def __serverfn__(self) -> ServerFnRef[InputT, ChunkT]:
        # A reference is its own reference: generated modules pass these to the clients.
        return self

    def decode(self, value: Any) -> ChunkT:
        """``value`` (a decoded JSON chunk) validated into the chunk type; raises
        ``UnexpectedChunk`` naming the fields that differ."""
        adapter = self._adapter
        if adapter is None:
            if self.chunk_type is Any:
                return value  # type: ignore[no-any-return]
            try:
                adapter = pydantic.TypeAdapter(self.chunk_type)
            except (PydanticSchemaGenerationError, PydanticUserError, TypeError):
                return value  # type: ignore[no-any-return]  # not a type pydantic can check
            self._adapter = adapter
        try:
            return adapter.validate_python(value)  # type: ignore[no-any-return]
        except pydantic.ValidationError as error:
            violations = [
                (".".join(str(part) for part in item["loc"]), str(item["msg"]))
                for item in error.errors(include_url=False)
            ]
        raise UnexpectedChunk(self.name, _type_name(self.chunk_type), value, violations)

    def __repr__(self) -> str:
        return f"ServerFnRef({self.name!r}, {_type_name(self.chunk_type)})"


class ServerFn(Protocol[InputT, ChunkT]):
    """Anything the clients call by reference: a function decorated with ``@fns.server_fn``
    (taking ``InputT``, producing chunks of ``ChunkT``), or a ``ServerFnRef``."""

    @property
    def __serverfn__(self) -> ServerFnRef[InputT, ChunkT]: ...


def ref_of(function: object) -> ServerFnRef[Any, Any]:
    """The reference a decorated function carries; TypeError for any other object."""
    ref = getattr(function, "__serverfn__", None)
    if not isinstance(ref, ServerFnRef):
        raise TypeError(
            f"{function!r} is not a registered server function: pass its name, or a function"
            " decorated with @fns.server_fn"
        )
    return ref


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or repr(annotation)
