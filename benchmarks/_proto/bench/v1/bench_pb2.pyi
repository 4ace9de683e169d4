from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Req(_message.Message):
    __slots__ = ("count", "size")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    count: int
    size: int
    def __init__(self, count: _Optional[int] = ..., size: _Optional[int] = ...) -> None: ...

class Msg(_message.Message):
    __slots__ = ("seq", "json")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    seq: int
    json: str
    def __init__(self, seq: _Optional[int] = ..., json: _Optional[str] = ...) -> None: ...

class ChatReq(_message.Message):
    __slots__ = ("tokens", "interval_us")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_US_FIELD_NUMBER: _ClassVar[int]
    tokens: int
    interval_us: int
    def __init__(self, tokens: _Optional[int] = ..., interval_us: _Optional[int] = ...) -> None: ...

class Token(_message.Message):
    __slots__ = ("seq", "due_us", "text")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    DUE_US_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    seq: int
    due_us: int
    text: str
    def __init__(self, seq: _Optional[int] = ..., due_us: _Optional[int] = ..., text: _Optional[str] = ...) -> None: ...
