"""The static shapes of a server function, for typing ``@fns.server_fn``.

The decorator returns the function itself, marked with its ``ServerFnRef``; its overloads tell
the type checker the rest: which of four input shapes the function has (``data`` and ``ctx``,
``data``, ``ctx``, nothing) and which of four return shapes (async generator, generator,
coroutine, plain value), hence its input type ``I`` and chunk type ``C``. The result is
still callable with the function's own parameters, and is a ``ServerFn[I, C]`` for the clients.

Nothing here runs: these are Protocols for the type checker alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, overload

from .typed import ServerFn

if TYPE_CHECKING:
    from .context import Context

__all__ = ["Decorator"]

I = TypeVar("I")  # noqa: E741
C = TypeVar("C")
I_contra = TypeVar("I_contra", contravariant=True)
C_co = TypeVar("C_co", covariant=True)
R_co = TypeVar("R_co", covariant=True)

# What a function takes. Keyword-only, so that `def f(ctx, data)` matches as `def f(data, ctx)`
# does: the server passes both by name.


class _TakesDataAndContext(Protocol[I_contra, R_co]):
    def __call__(self, *, data: I_contra, ctx: Context) -> R_co: ...


class _TakesData(Protocol[I_contra, R_co]):
    def __call__(self, *, data: I_contra) -> R_co: ...


class _TakesContext(Protocol[R_co]):
    def __call__(self, *, ctx: Context) -> R_co: ...


class _TakesNothing(Protocol[R_co]):
    def __call__(self) -> R_co: ...


# What the decorator returns: the same call signature, and a ServerFn (a function without input
# is a ServerFn[None, C]: the clients then take no data).


class _DataAndContext(ServerFn[I_contra, C_co], Protocol[I_contra, C_co, R_co]):
    def __call__(self, data: I_contra, ctx: Context) -> R_co: ...


class _Data(ServerFn[I_contra, C_co], Protocol[I_contra, C_co, R_co]):
    def __call__(self, data: I_contra) -> R_co: ...


class _Context(ServerFn[None, C_co], Protocol[C_co, R_co]):
    def __call__(self, ctx: Context) -> R_co: ...


class _Nothing(ServerFn[None, C_co], Protocol[C_co, R_co]):
    def __call__(self) -> R_co: ...


class Decorator(Protocol):
    """``fns.server_fn``: bare (``@fns.server_fn``) or with options (``@fns.server_fn(...)``).

    Return shapes are tried from the most specific: an async generator's type would also match
    "returns a value", with the async iterator as its one chunk.
    """

    @overload
    def __call__(
        self, fn: _TakesDataAndContext[I, AsyncIterator[C]], /
    ) -> _DataAndContext[I, C, AsyncIterator[C]]: ...
    @overload
    def __call__(
        self, fn: _TakesDataAndContext[I, Iterator[C]], /
    ) -> _DataAndContext[I, C, Iterator[C]]: ...
    @overload
    def __call__(
        self, fn: _TakesDataAndContext[I, Coroutine[Any, Any, C]], /
    ) -> _DataAndContext[I, C, Coroutine[Any, Any, C]]: ...
    @overload
    def __call__(self, fn: _TakesDataAndContext[I, C], /) -> _DataAndContext[I, C, C]: ...
    @overload
    def __call__(self, fn: _TakesData[I, AsyncIterator[C]], /) -> _Data[I, C, AsyncIterator[C]]: ...
    @overload
    def __call__(self, fn: _TakesData[I, Iterator[C]], /) -> _Data[I, C, Iterator[C]]: ...
    @overload
    def __call__(
        self, fn: _TakesData[I, Coroutine[Any, Any, C]], /
    ) -> _Data[I, C, Coroutine[Any, Any, C]]: ...
    @overload
    def __call__(self, fn: _TakesData[I, C], /) -> _Data[I, C, C]: ...
    @overload
    def __call__(self, fn: _TakesContext[AsyncIterator[C]], /) -> _Context[C, AsyncIterator[C]]: ...
    @overload
    def __call__(self, fn: _TakesContext[Iterator[C]], /) -> _Context[C, Iterator[C]]: ...
    @overload
    def __call__(
        self, fn: _TakesContext[Coroutine[Any, Any, C]], /
    ) -> _Context[C, Coroutine[Any, Any, C]]: ...
    @overload
    def __call__(self, fn: _TakesContext[C], /) -> _Context[C, C]: ...
    @overload
    def __call__(self, fn: _TakesNothing[AsyncIterator[C]], /) -> _Nothing[C, AsyncIterator[C]]: ...
    @overload
    def __call__(self, fn: _TakesNothing[Iterator[C]], /) -> _Nothing[C, Iterator[C]]: ...
    @overload
    def __call__(
        self, fn: _TakesNothing[Coroutine[Any, Any, C]], /
    ) -> _Nothing[C, Coroutine[Any, Any, C]]: ...
    @overload
    def __call__(self, fn: _TakesNothing[C], /) -> _Nothing[C, C]: ...
    @overload
    def __call__(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        method: Literal["GET", "POST"] = "GET",
        description: str | None = None,
        validator: Any = None,
        require_roles: Iterable[str] = (),
        resumable: bool = False,
    ) -> Decorator: ...
