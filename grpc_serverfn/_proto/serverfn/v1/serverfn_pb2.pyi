from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Encoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENCODING_UNSPECIFIED: _ClassVar[Encoding]
    ENCODING_JSON: _ClassVar[Encoding]
    ENCODING_VALUE: _ClassVar[Encoding]

class Method(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METHOD_UNSPECIFIED: _ClassVar[Method]
    METHOD_GET: _ClassVar[Method]
    METHOD_POST: _ClassVar[Method]
ENCODING_UNSPECIFIED: Encoding
ENCODING_JSON: Encoding
ENCODING_VALUE: Encoding
METHOD_UNSPECIFIED: Method
METHOD_GET: Method
METHOD_POST: Method

class InvokeRequest(_message.Message):
    __slots__ = ("function", "json", "value", "accept", "max_batch", "resume")
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    function: str
    json: str
    value: _struct_pb2.Value
    accept: Encoding
    max_batch: int
    resume: Resume
    def __init__(self, function: _Optional[str] = ..., json: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., accept: _Optional[_Union[Encoding, str]] = ..., max_batch: _Optional[int] = ..., resume: _Optional[_Union[Resume, _Mapping]] = ...) -> None: ...

class Resume(_message.Message):
    __slots__ = ("stream_id", "next_seq")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    NEXT_SEQ_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    next_seq: int
    def __init__(self, stream_id: _Optional[str] = ..., next_seq: _Optional[int] = ...) -> None: ...

class CancelStreamRequest(_message.Message):
    __slots__ = ("stream_id",)
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    def __init__(self, stream_id: _Optional[str] = ...) -> None: ...

class CancelStreamResponse(_message.Message):
    __slots__ = ("was_running",)
    WAS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    was_running: bool
    def __init__(self, was_running: _Optional[bool] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("json", "value", "batch", "seq")
    JSON_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    json: str
    value: _struct_pb2.Value
    batch: ChunkBatch
    seq: int
    def __init__(self, json: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., batch: _Optional[_Union[ChunkBatch, _Mapping]] = ..., seq: _Optional[int] = ...) -> None: ...

class ChunkBatch(_message.Message):
    __slots__ = ("json", "values")
    JSON_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    json: _containers.RepeatedScalarFieldContainer[str]
    values: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Value]
    def __init__(self, json: _Optional[_Iterable[str]] = ..., values: _Optional[_Iterable[_Union[_struct_pb2.Value, _Mapping]]] = ...) -> None: ...

class ListFunctionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFunctionsResponse(_message.Message):
    __slots__ = ("functions",)
    FUNCTIONS_FIELD_NUMBER: _ClassVar[int]
    functions: _containers.RepeatedCompositeFieldContainer[FunctionInfo]
    def __init__(self, functions: _Optional[_Iterable[_Union[FunctionInfo, _Mapping]]] = ...) -> None: ...

class FunctionInfo(_message.Message):
    __slots__ = ("name", "description", "streaming", "method", "takes_input", "input_required", "input_schema", "output_schema", "resumable")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    STREAMING_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TAKES_INPUT_FIELD_NUMBER: _ClassVar[int]
    INPUT_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    INPUT_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    RESUMABLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    streaming: bool
    method: Method
    takes_input: bool
    input_required: bool
    input_schema: _struct_pb2.Struct
    output_schema: _struct_pb2.Struct
    resumable: bool
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., streaming: _Optional[bool] = ..., method: _Optional[_Union[Method, str]] = ..., takes_input: _Optional[bool] = ..., input_required: _Optional[bool] = ..., input_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., output_schema: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., resumable: _Optional[bool] = ...) -> None: ...
