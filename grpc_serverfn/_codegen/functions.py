"""What every emitter starts from: the server's functions, their schemas and type names.

Names: a function ``stream_chat`` has the types ``StreamChatInput`` (absent when it takes no
input) and ``StreamChatChunk``. Models the schemas share by ``$defs`` keep their own names; two
different models of one name in two functions are told apart by the function's prefix
(``GreetAddress``), and every ``$ref`` follows.
"""

from __future__ import annotations

import copy
import keyword
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from .._client_core import FunctionInfo, function_infos
from .._messages import function_list
from ..client import Client
from ..registry import Registry

__all__ = ["Function", "from_infos", "from_registry", "from_server", "merged_defs"]

_WORD = re.compile(r"[A-Za-z0-9]+")
_REF_PREFIX = "#/$defs/"
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMAS = ("items", "additionalProperties", "not", "contains", "if", "then", "else")


@dataclass(frozen=True, slots=True)
class Function:
    """One server function, as the emitters see it."""

    name: str
    """The registered name, sent on the wire."""
    identifier: str
    """A snake_case identifier for it (``a.b-c`` -> ``a_b_c``)."""
    pascal: str
    """Its PascalCase stem: ``StreamChat`` for the types ``StreamChatInput``/``StreamChatChunk``."""
    camel: str
    """Its camelCase name (``streamChat``), for languages that use it."""
    description: str
    streaming: bool
    takes_input: bool
    input_required: bool
    input_schema: dict[str, Any] | None
    """Its input's JSON Schema; ``{}``: any JSON; None: it takes no input."""
    output_schema: dict[str, Any] | None
    """One chunk's JSON Schema; None: not declared (chunks are any JSON)."""
    resumable: bool = False
    """Calls are resumable streams (they can be picked up again by stream id)."""

    @property
    def input_type(self) -> str:
        return f"{self.pascal}Input"

    @property
    def chunk_type(self) -> str:
        return f"{self.pascal}Chunk"


def from_server(client: Client) -> list[Function]:
    """The functions a running server lists."""
    return from_infos(client.functions())


def from_registry(registry: Registry) -> list[Function]:
    """The functions of a registry, exactly as a server serving it would list them."""
    return from_infos(function_infos(function_list(registry)))


def from_infos(infos: Iterable[FunctionInfo]) -> list[Function]:
    functions = []
    taken: set[str] = set()
    for info in sorted(infos, key=lambda info: info.name):
        words = _WORD.findall(info.name) or ["fn"]
        identifier = _unique("_".join(word.lower() for word in words), taken)
        pascal = "".join(word[:1].upper() + word[1:] for word in identifier.split("_") if word)
        camel = pascal[:1].lower() + pascal[1:]
        functions.append(
            Function(
                name=info.name,
                identifier=identifier,
                pascal=pascal,
                camel=camel,
                description=info.description,
                streaming=info.streaming,
                takes_input=info.takes_input,
                input_required=info.input_required,
                input_schema=_sorted(info.input_schema) if info.takes_input else None,
                output_schema=_sorted(info.output_schema),
                resumable=info.resumable,
            )
        )
    return functions


def _unique(identifier: str, taken: set[str]) -> str:
    if identifier[0].isdigit() or keyword.iskeyword(identifier):
        identifier = f"fn_{identifier}"
    while identifier in taken:
        identifier += "_"
    taken.add(identifier)
    return identifier


def _sorted(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    # Keys in a fixed order: ListFunctions carries schemas as protobuf Structs, whose maps
    # keep no order, and the generated text must not change from one run to the next.
    if schema is None:
        return None
    result: dict[str, Any] = orjson.loads(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
    return result


def merged_defs(functions: Sequence[Function]) -> dict[str, dict[str, Any]]:
    """One ``$defs`` namespace for all the functions: ``<Pascal>Input`` and ``<Pascal>Chunk``
    for each schema there is, and every model they refer to; ``title`` keywords dropped (the
    names say it). Refs point into this namespace (``#/$defs/NAME``)."""
    merged: dict[str, dict[str, Any]] = {}
    reserved = {f.input_type for f in functions if f.input_schema is not None} | {
        f.chunk_type for f in functions if f.output_schema is not None
    }
    for function in functions:
        for name, schema in (
            (function.input_type, function.input_schema),
            (function.chunk_type, function.output_schema),
        ):
            if schema is None:
                continue
            schema = copy.deepcopy(schema)
            local = schema.pop("$defs", {})
            renames: dict[str, str] = {}
            for def_name, def_schema in local.items():
                new_name = def_name
                if new_name in reserved or (
                    new_name in merged and merged[new_name] != _untitled(def_schema, {})
                ):
                    new_name = f"{function.pascal}{def_name}"
                    while new_name in merged or new_name in reserved:
                        new_name += "_"
                renames[def_name] = new_name
            for def_name, def_schema in local.items():
                merged[renames[def_name]] = _untitled(def_schema, renames)
            merged[name] = _untitled(schema, renames)
    return merged


def _untitled(schema: Any, renames: dict[str, str]) -> Any:
    """``schema`` without ``title`` keywords, its ``$ref``s renamed."""
    if not isinstance(schema, dict):
        return schema
    result: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key == "$ref" and isinstance(value, str) and value.startswith(_REF_PREFIX):
            target = value.removeprefix(_REF_PREFIX)
            result[key] = _REF_PREFIX + renames.get(target, target)
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            result[key] = {name: _untitled(item, renames) for name, item in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            result[key] = [_untitled(item, renames) for item in value]
        elif key in _SCHEMAS:
            result[key] = _untitled(value, renames)
        else:
            result[key] = value
    return result
