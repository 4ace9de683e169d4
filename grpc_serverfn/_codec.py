"""JSON payloads on the wire: UTF-8 text (orjson) and native ``google.protobuf.Value``.

Both encodings carry the same JSON: anything that is not a JSON type (dataclasses, pydantic
models, datetimes, UUIDs, enums, ...) is first turned into JSON by orjson, so a chunk reads the
same whichever encoding the caller asked for. ``Value`` numbers are doubles; integral doubles
decode back to ``int`` so ``{"count": 3}`` sent by grpcurl reaches Python as ``3``, not ``3.0``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import orjson
import pydantic
import pydantic_core
from google.protobuf import struct_pb2

__all__ = [
    "Encoding",
    "JSONDecodeError",
    "UnencodableValue",
    "decode_json",
    "deeper_than",
    "dict_to_struct",
    "encode_json",
    "fill_value",
    "from_value",
    "struct_to_dict",
    "to_value",
]

_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
_MAX_EXACT_INT = 2**53

JSONDecodeError = orjson.JSONDecodeError

Encoding = Literal["json", "value"]
"""The two payload encodings: UTF-8 JSON text, or ``google.protobuf.Value``."""


class UnencodableValue(TypeError):
    """A value that cannot be encoded as JSON; ``type_name`` names its (innermost) type."""

    def __init__(self, type_name: str, reason: str) -> None:
        super().__init__(f"{type_name}: {reason}")
        self.type_name = type_name
        self.reason = reason


class _NotSerializable(TypeError):
    def __init__(self, obj: object) -> None:
        super().__init__(type(obj).__qualname__)
        self.type_name = type(obj).__qualname__


def _default(obj: Any) -> Any:
    """orjson's fallback for the types it does not know natively."""
    if isinstance(obj, pydantic.BaseModel):
        return obj.model_dump(mode="json", by_alias=True)  # the names its JSON Schema shows
    try:
        return pydantic_core.to_jsonable_python(obj)
    except pydantic_core.PydanticSerializationError:
        raise _NotSerializable(obj) from None


def encode_json(obj: Any) -> str:
    """Encode a Python value as JSON text."""
    try:
        return orjson.dumps(obj, default=_default, option=_ORJSON_OPTIONS).decode()
    except orjson.JSONEncodeError as error:
        cause = error.__cause__
        if isinstance(cause, _NotSerializable):
            raise UnencodableValue(cause.type_name, "not JSON serializable") from None
        raise UnencodableValue(type(obj).__qualname__, str(error)) from None


def decode_json(text: str | bytes) -> Any:
    """Decode JSON text; raises ``JSONDecodeError`` (with ``lineno``/``colno``) when malformed."""
    return orjson.loads(text)


def to_value(obj: Any) -> struct_pb2.Value:
    """Encode a Python value as a ``google.protobuf.Value``."""
    value = struct_pb2.Value()
    fill_value(value, obj)
    return value


def fill_value(value: struct_pb2.Value, obj: Any) -> None:
    """Encode ``obj`` into ``value`` in place (no copy, unlike assigning a built Value)."""
    # Exact type checks keep bool out of the int branch and subclasses (enums) on the slow path.
    kind = type(obj)
    if kind is str:
        value.string_value = obj
    elif kind is bool:
        value.bool_value = obj
    elif kind is int:
        if not -(2**63) <= obj < 2**64:
            raise UnencodableValue("int", "Integer exceeds 64-bit range")
        value.number_value = obj
    elif kind is float:
        if math.isfinite(obj):
            value.number_value = obj
        else:
            value.null_value = struct_pb2.NULL_VALUE  # as orjson writes NaN and infinities
    elif obj is None:
        value.null_value = struct_pb2.NULL_VALUE
    elif kind is dict and all(type(key) is str for key in obj):
        fields = value.struct_value.fields
        if not obj:
            value.struct_value.SetInParent()
        for key, item in obj.items():
            fill_value(fields[key], item)
    elif kind is list or kind is tuple:
        items = value.list_value
        items.SetInParent()
        for item in obj:
            fill_value(items.values.add(), item)
    else:
        # Everything else goes through orjson so both encodings agree on its JSON form.
        fill_value(value, decode_json(encode_json(obj)))


def from_value(value: struct_pb2.Value) -> Any:
    """Decode a ``google.protobuf.Value`` to Python (integral numbers become ``int``)."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        if number.is_integer() and abs(number) <= _MAX_EXACT_INT:
            return int(number)
        return number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {key: from_value(item) for key, item in value.struct_value.fields.items()}
    if kind == "list_value":
        return [from_value(item) for item in value.list_value.values]
    return None  # null_value, or a Value with nothing set


def deeper_than(obj: Any, limit: int) -> bool:
    """True when lists and objects nest more than ``limit`` levels deep (checked iteratively)."""
    stack = [(obj, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """Decode a ``google.protobuf.Struct`` (a JSON object) to a dict."""
    return {key: from_value(item) for key, item in struct.fields.items()}


def dict_to_struct(obj: dict[str, Any]) -> struct_pb2.Struct:
    """Encode a JSON object as a ``google.protobuf.Struct``."""
    return to_value(obj).struct_value
