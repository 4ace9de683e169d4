"""``grpc-serverfn codegen LANGUAGE``: typed callers written from a server's JSON Schemas.

Two steps, so that each language is one emitter over the same input::

    functions.py   collect: every function's name, kind and schemas, from a running server
                   (ListFunctions) or from a Registry (--app); the schemas' $defs merged into
                   one namespace, with the type names every emitter uses
    python.py      emit: pydantic models (datamodel-code-generator) and typed classes over
                   Client and AsyncClient
    typescript.py  emit: types (json-schema-to-typescript, run with Node) and typed functions
                   over the TypeScript client

An emitter takes the collected functions and returns the module's text; ``--check`` compares
that text with the file written before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from . import typescript
from .functions import Function, from_registry, from_server
from .typescript import CodegenError

__all__ = ["EMITTERS", "CodegenError", "Function", "from_registry", "from_server", "generate"]


def _python(functions: Sequence[Function]) -> str:
    from . import python  # imports datamodel-code-generator: only when asked for

    return python.emit(functions)


EMITTERS: dict[str, Callable[[Sequence[Function]], str]] = {
    "python": _python,
    "typescript": typescript.emit,
}
"""Each language's emitter, by the name the command line takes."""


def generate(language: str, functions: Sequence[Function]) -> str:
    """The module ``codegen LANGUAGE`` writes for ``functions``."""
    return EMITTERS[language](functions)
