"""The Registry of server functions and the ``@fns.server_fn`` decorator.

Each function is classified once, when it is decorated, into a frozen ``ServerFunction``:
its kind (plain, coroutine, generator, async generator), its validator, whether it wants the
call's ``Context``. Nothing about a function is inspected again per call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import inspect
import re
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import pydantic

from ._validation import Validator, invalid_input, output_of, validator_for
from .context import Context
from .typed import ServerFnRef

if typing.TYPE_CHECKING:
    from ._shapes import Decorator
    from .middleware import Middleware

__all__ = ["NO_INPUT", "Kind", "Registry", "ServerFunction"]

F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound="Middleware")
HTTPMethod = Literal["GET", "POST"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-/]*$")
_INPUT_PARAMETER = "data"
_CONTEXT_PARAMETER = "ctx"


class _NoInput(enum.Enum):
    NO_INPUT = "NO_INPUT"

    def __repr__(self) -> str:
        return "NO_INPUT"


NO_INPUT: typing.Final = _NoInput.NO_INPUT
"""The caller sent no input (an unset oneof or an empty ``json`` string); distinct from null."""


class Kind(enum.Enum):
    """How a server function produces its chunks."""

    FUNCTION = "function"
    """``def``: its return value is one chunk; runs in a worker thread."""
    COROUTINE = "coroutine"
    """``async def``: its return value is one chunk."""
    GENERATOR = "generator"
    """``def`` with ``yield``: every yield is a chunk; stepped in a worker thread."""
    ASYNC_GENERATOR = "async_generator"
    """``async def`` with ``yield``: every yield is a chunk."""

    @property
    def streaming(self) -> bool:
        return self in (Kind.GENERATOR, Kind.ASYNC_GENERATOR)


@dataclass(frozen=True, slots=True)
class ServerFunction:
    """One registered function, classified once at registration."""

    name: str
    fn: Callable[..., Any]
    kind: Kind
    method: HTTPMethod
    description: str
    validator: Validator | None
    """None when the function takes no input (it has no ``data`` parameter)."""
    input_default: Any
    """The ``data`` parameter's default, or NO_INPUT when it has none (input is required)."""
    wants_context: bool
    output_schema: dict[str, Any] | None = field(default=None)
    chunk_type: Any = field(default=Any)
    """The type of each chunk, from the return annotation (``Any`` when it says nothing)."""
    chunk_adapter: pydantic.TypeAdapter[Any] | None = field(default=None, repr=False)
    required_roles: frozenset[str] = field(default=frozenset())
    """Roles a caller must have; enforced by an auth middleware such as ``bearer_auth``."""
    resumable: bool = False
    """Calls are resumable streams: stored as produced, the producer detached from the caller."""

    @property
    def streaming(self) -> bool:
        """True for generators (any number of chunks), False for functions (exactly one)."""
        return self.kind.streaming

    @property
    def takes_input(self) -> bool:
        return self.validator is not None

    @property
    def input_required(self) -> bool:
        return self.validator is not None and self.input_default is NO_INPUT

    def arguments(self, raw_input: Any, ctx: Context) -> dict[str, Any]:
        """Validate the decoded input and build the handler's keyword arguments.

        Raises ``InvalidArgument`` when the input is missing, unexpected or invalid.
        """
        arguments: dict[str, Any] = {}
        if self.wants_context:
            arguments[_CONTEXT_PARAMETER] = ctx
        if self.validator is None:
            if raw_input is not NO_INPUT and raw_input is not None:
                raise invalid_input(self.name, [("", "this function takes no input")])
            return arguments
        if raw_input is NO_INPUT:
            if self.input_default is not NO_INPUT:
                arguments[_INPUT_PARAMETER] = self.input_default
                return arguments
            try:
                arguments[_INPUT_PARAMETER] = self.validator.validate(None)
            except Exception:
                raise invalid_input(self.name, [("", "input is required")]) from None
            return arguments
        arguments[_INPUT_PARAMETER] = self.validator.validate(raw_input)
        return arguments


class Registry:
    """A set of server functions, served together by one server.

    >>> fns = Registry()
    >>> @fns.server_fn
    ... async def stream_data():
    ...     yield {"progress": 0}
    """

    def __init__(self, *, middleware: Sequence[Middleware] = ()) -> None:
        self._functions: dict[str, ServerFunction] = {}
        self._middleware: list[Middleware] = list(middleware)
        self._frozen = False

    @property
    def server_fn(self) -> Decorator:
        """Register a function; use bare (``@fns.server_fn``) or with options.

        ``name`` defaults to the function's ``__name__``, ``description`` to its docstring;
        ``validator`` overrides the ``data`` parameter's annotation; ``require_roles`` names
        roles a caller must have (checked by ``grpc_serverfn.auth.bearer_auth``); ``resumable``
        makes every call a stream that outlives a dropped connection and can be resumed (see
        ``grpc_serverfn._resumable``). The function itself is returned, so it stays callable
        in tests; it is marked with its ``ServerFnRef``, so the clients can call it by
        reference, typed (``client.invoke(stream_chat, ChatInput(...))``, see
        ``grpc_serverfn.typed``).
        """
        # A property typed by a Protocol: its overloads (in _shapes) give the type checker each
        # function's input and chunk types; the one implementation is below.
        return typing.cast("Decorator", self._server_fn)

    def _server_fn(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        method: HTTPMethod = "GET",
        description: str | None = None,
        validator: Any = None,
        require_roles: Iterable[str] = (),
        resumable: bool = False,
    ) -> Any:
        def register(fn: F) -> F:
            self.add(
                fn,
                name=name,
                method=method,
                description=description,
                validator=validator,
                require_roles=require_roles,
                resumable=resumable,
            )
            return fn

        return register if fn is None else register(fn)

    def add(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        method: HTTPMethod = "GET",
        description: str | None = None,
        validator: Any = None,
        require_roles: Iterable[str] = (),
        resumable: bool = False,
    ) -> ServerFunction:
        """Register ``fn`` (what the decorator does) and return its record."""
        self._check_not_frozen()
        record = _classify(fn, name, method, description, validator, frozenset(require_roles))
        if resumable:
            record = dataclasses.replace(record, resumable=True)
        if record.name in self._functions:
            raise ValueError(f"a server function named {record.name!r} is already registered")
        self._functions[record.name] = record
        _mark(fn, ServerFnRef(record.name, record.chunk_type, record.chunk_adapter))
        return record

    def middleware(self, middleware: M) -> M:
        """Add a middleware around every call (usable as a decorator); first added is outermost."""
        self._check_not_frozen()
        self._middleware.append(middleware)
        return middleware

    @property
    def middlewares(self) -> tuple[Middleware, ...]:
        return tuple(self._middleware)

    def get(self, name: str) -> ServerFunction | None:
        """The function registered as ``name``, or None."""
        return self._functions.get(name)

    def __getitem__(self, name: str) -> ServerFunction:
        return self._functions[name]

    def __contains__(self, name: object) -> bool:
        return name in self._functions

    def __iter__(self) -> Iterator[ServerFunction]:
        return iter(sorted(self._functions.values(), key=lambda record: record.name))

    def __len__(self) -> int:
        return len(self._functions)

    def freeze(self) -> None:
        """Refuse further registrations; a server freezes its registry when it starts."""
        self._frozen = True

    @property
    def frozen(self) -> bool:
        return self._frozen

    def _check_not_frozen(self) -> None:
        if self._frozen:
            raise RuntimeError("the registry is frozen: a server using it has started")

    def __repr__(self) -> str:
        return f"<Registry {sorted(self._functions)}>"


def _classify(
    fn: Callable[..., Any],
    name: str | None,
    method: str,
    description: str | None,
    explicit_validator: Any,
    required_roles: frozenset[str] = frozenset(),
) -> ServerFunction:
    if not callable(fn):
        raise TypeError(f"server_fn expects a function, not {fn!r}")
    name = name if name is not None else getattr(fn, "__name__", "")
    if not _NAME.match(name):
        raise ValueError(
            f"invalid server function name {name!r}: use letters, digits, '_', '.', '-' or '/',"
            " starting with a letter or '_'"
        )
    method = method.upper()
    if method not in ("GET", "POST"):
        raise ValueError(
            f"server function {name!r}: method must be 'GET' or 'POST', not {method!r}"
        )

    signature = inspect.signature(fn)
    hints = _type_hints(fn, name)
    wants_context = False
    data_parameter: inspect.Parameter | None = None
    for parameter in signature.parameters.values():
        if parameter.name == _CONTEXT_PARAMETER or hints.get(parameter.name) is Context:
            if parameter.name != _CONTEXT_PARAMETER:
                raise TypeError(f"server function {name!r}: name the Context parameter 'ctx'")
            wants_context = True
        elif parameter.name == _INPUT_PARAMETER:
            data_parameter = parameter
        elif parameter.default is inspect.Parameter.empty and parameter.kind not in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            raise TypeError(
                f"server function {name!r}: unexpected parameter {parameter.name!r};"
                " a server function takes 'data' (its input) and/or 'ctx' (its Context)"
            )
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY and parameter.name in (
            _INPUT_PARAMETER,
            _CONTEXT_PARAMETER,
        ):
            raise TypeError(
                f"server function {name!r}: {parameter.name!r} must not be positional-only"
            )

    validator: Validator | None = None
    input_default: Any = NO_INPUT
    if data_parameter is not None:
        spec = explicit_validator if explicit_validator is not None else hints.get("data", Any)
        validator = validator_for(name, spec)
        if data_parameter.default is not inspect.Parameter.empty:
            input_default = data_parameter.default
    elif explicit_validator is not None:
        raise TypeError(
            f"server function {name!r}: a validator was given but it has no 'data' parameter"
        )

    kind = _kind_of(fn)
    output = output_of(hints.get("return"), streaming=kind.streaming)
    return ServerFunction(
        name=name,
        fn=fn,
        kind=kind,
        method=typing.cast(HTTPMethod, method),
        description=description if description is not None else inspect.getdoc(fn) or "",
        validator=validator,
        input_default=input_default,
        wants_context=wants_context,
        output_schema=output.schema,
        chunk_type=output.chunk_type,
        chunk_adapter=output.adapter,
        required_roles=required_roles,
    )


def _mark(fn: Callable[..., Any], ref: ServerFnRef[Any, Any]) -> None:
    """Mark ``fn`` as what the clients call by reference (the last registration wins)."""
    # A bound method or a builtin takes no attributes: it is called by name only.
    with contextlib.suppress(AttributeError, TypeError):
        fn.__serverfn__ = ref  # type: ignore[attr-defined]


def _kind_of(fn: Callable[..., Any]) -> Kind:
    if inspect.isasyncgenfunction(fn):
        return Kind.ASYNC_GENERATOR
    if inspect.iscoroutinefunction(fn):
        return Kind.COROUTINE
    if inspect.isgeneratorfunction(fn):
        return Kind.GENERATOR
    return Kind.FUNCTION


def _type_hints(fn: Callable[..., Any], name: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except NameError as error:
        raise TypeError(
            f"server function {name!r}: cannot resolve its annotations ({error}); define the"
            " types it names at module level"
        ) from None
