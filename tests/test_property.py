"""Property-based fuzzing of Invoke: hostile requests built field by field, and raw bytes.

Hypothesis generates requests and sends each one's bytes, as they are, through a generic
channel to a real in-process server running ``tests.app``:

- structured ``InvokeRequest``s written field by field on the wire (so protobuf cannot refuse
  to build them): random function names (empty, unicode, 100,000 characters, invalid UTF-8),
  invalid JSON, valid JSON of random shapes, JSON nested 100,000 deep, huge numbers, strings
  of megabytes, invalid UTF-8 in the ``json`` field, ``value`` inputs (random, garbage, nested
  100,000 deep), random ``accept`` and ``max_batch``, unknown and mistyped fields;
- raw bytes as the whole request: empty, random, valid requests with bits flipped, cut short
  or spliced, and messages over the receive limit (against the default server's 4 MiB and a
  second server limited to 64 KiB, where oversized inputs are cheap).

The property: every call ends with the status the request explains (protobuf itself is the
oracle for which bytes are an InvokeRequest), never UNKNOWN, never INTERNAL except from the
test-app functions designed to raise, never with exception text, file paths or a handler's
secrets in its message; and the server then still answers a normal call.

The run is deterministic (``derandomize=True``, no example database). By default each of the
two properties tries ``DEFAULT_EXAMPLES`` inputs (about 15 s for both on 2 cores). A longer
fuzz run, 10,000 inputs in each property (20,000 in all, about six minutes), printing
how many were tried and which statuses they got::

    SERVERFN_FUZZ_EXAMPLES=10000 .venv/bin/pytest tests/test_property.py -s
"""

from __future__ import annotations

import collections
import json
import math
import os
import re
import struct
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import grpc
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grpc_serverfn import Limits
from grpc_serverfn import _codec as codec
from grpc_serverfn._proto.serverfn.v1 import serverfn_pb2
from grpc_serverfn.config import DEFAULT_MAX_MESSAGE_BYTES
from grpc_serverfn.testing import RunningServer, run_in_thread
from tests import app

DEFAULT_EXAMPLES = 400
EXAMPLES = int(os.environ.get("SERVERFN_FUZZ_EXAMPLES", DEFAULT_EXAMPLES))
SMALL_LIMIT = 64 * 1024
MAX_CHUNKS_READ = 50  # a valid call may stream up to a million chunks; this many prove it works

Code = grpc.StatusCode
# What any request naming a callable function may end with: OK; INVALID_ARGUMENT (bad JSON,
# input that fails validation or nests too deep, an unknown accept encoding, input sent to a
# function that takes none); RESOURCE_EXHAUSTED (the echo of an input bigger, once encoded,
# than the server sends in one message).
CALLABLE_CODES = frozenset({Code.OK, Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED})
# The test-app functions the fuzzer calls by name, and what each may add by design. The rest of
# tests.app is left out on purpose (random names that hit one get a "?" appended): those
# functions wait on probes or until cancelled (wait_*, endless, stubborn, firehose, ...), or
# sleep or allocate as much as their input says (blocking_sleep, big_after), which valid random
# input would make them do. The app has no auth middleware, so no PERMISSION_DENIED or
# UNAUTHENTICATED; and a call the server ends by itself never hits its deadline.
DESIGNED: dict[str, frozenset[Code]] = {
    "echo_async": CALLABLE_CODES,
    "echo_sync": CALLABLE_CODES,
    "count_async": CALLABLE_CODES,
    "count_sync": CALLABLE_CODES,
    "no_input": CALLABLE_CODES,
    "rich_values": CALLABLE_CODES,
    "context_info": CALLABLE_CODES,
    "raise_invalid": CALLABLE_CODES,
    "fail_after": CALLABLE_CODES | {Code.FAILED_PRECONDITION},
    "trailer_then_fail": CALLABLE_CODES | {Code.FAILED_PRECONDITION},
    "fail_after_sync": CALLABLE_CODES | {Code.NOT_FOUND},
    # Designed to raise unexpected exceptions or yield what JSON cannot encode: INTERNAL.
    "crash_after": CALLABLE_CODES | {Code.INTERNAL},
    "crash_sync": CALLABLE_CODES | {Code.INTERNAL},
    "unencodable": CALLABLE_CODES | {Code.INTERNAL},
}
# Text that must never reach a caller: Python's exception machinery, library internals, source
# paths, and the secret crash_after and crash_sync put in their exceptions.
LEAKS = (
    "Traceback",
    'File "',
    ".py",
    "Exception",
    "Error:",
    "DecodeError",
    "ValidationError",
    "orjson",
    "pydantic",
    "upb_",
    "<class",
    "hunter2",
    "password=",
)
# The messages that repeat the caller's own text (a name, a stream id): that part is not
# scanned for leaks.
ECHOED = re.compile(
    r"unknown server function .*; ListFunctions|no resumable stream .*: it never", re.DOTALL
)


# --- The wire format, written by hand ---------------------------------------------------


def varint(number: int) -> bytes:
    number &= (1 << 64) - 1  # negative int32 enums travel as ten-byte two's complement
    out = bytearray()
    while number > 0x7F:
        out.append(number & 0x7F | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def varint_field(field: int, number: int) -> bytes:
    return tag(field, 0) + varint(number)


def len_field(field: int, payload: bytes) -> bytes:
    return tag(field, 2) + varint(len(payload)) + payload


def value_bytes(obj: Any) -> bytes:
    """``obj`` (JSON) as ``google.protobuf.Value`` bytes; numbers past a double's range are
    infinities, which ``Value`` cannot hold in JSON but its wire format can."""
    if obj is None:
        return varint_field(1, 0)
    if isinstance(obj, bool):
        return varint_field(4, int(obj))
    if isinstance(obj, int | float):
        try:
            number = float(obj)
        except OverflowError:
            number = math.copysign(math.inf, obj)
        return tag(2, 1) + struct.pack("<d", number)
    if isinstance(obj, str):
        return len_field(3, obj.encode())
    if isinstance(obj, dict):
        entries = b"".join(
            len_field(1, len_field(1, key.encode()) + len_field(2, value_bytes(item)))
            for key, item in obj.items()
        )
        return len_field(5, entries)
    return len_field(6, b"".join(len_field(1, value_bytes(item)) for item in obj))


def nested_value_bytes(depth: int) -> bytes:
    """A ``Value`` of ``depth`` nested one-item lists around the number 1, built in O(depth)
    (each level is a prefix: its header only needs the inner size)."""
    core = tag(2, 1) + struct.pack("<d", 1.0)
    headers = []
    inner = len(core)
    for _ in range(depth):
        list_size = 1 + len(varint(inner)) + inner
        headers.append(tag(6, 2) + varint(list_size) + tag(1, 2) + varint(inner))
        inner = 1 + len(varint(list_size)) + list_size
    return b"".join(reversed(headers)) + core


class Payload(bytes):
    """Request bytes that show as their start and length: a failing example may be megabytes."""

    def __repr__(self) -> str:
        head = bytes(self[:120])
        return f"Payload({head!r}{' + ...' if len(self) > 120 else ''}, {len(self)} bytes)"


# --- Strategies --------------------------------------------------------------------------

NAMES = sorted(DESIGNED)
BAD_UTF8 = [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]


def callable_or_unknown(name: str) -> str:
    """Keep the fuzzer off the registered functions it must not call (see DESIGNED)."""
    if name in DESIGNED or app.fns.get(name) is None:
        return name
    return name + "?"


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Draw from each strategy in proportion to its weight (``st.one_of`` counts a strategy
    given twice only once)."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(table).flatmap(lambda strategy: strategy)


def repeated(pattern: str, count: int) -> str:
    return pattern * count


function_names = weighted(
    (4, st.sampled_from(NAMES).map(str.encode)),  # most calls reach a function
    (1, st.text(max_size=30).map(callable_or_unknown).map(str.encode)),
    (1, st.sampled_from(NAMES).map(lambda name: name.upper() + " ").map(str.encode)),
    (
        1,
        st.builds(repeated, st.text(min_size=1, max_size=3), st.integers(100, 100_000)).map(
            lambda name: callable_or_unknown(name).encode()
        ),
    ),
    (
        1,
        st.binary(max_size=20)
        | st.tuples(st.sampled_from(NAMES), st.sampled_from(BAD_UTF8)).map(
            lambda pair: pair[0].encode() + pair[1]
        ),
    ),
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)
# Count and friends take {"n": ..., "probe": ...}: give validation something to pass, too.
count_inputs = st.fixed_dictionaries(
    {"n": st.integers(-5, 2_000_000) | json_scalars},
    optional={"probe": st.text(max_size=5) | json_scalars, "extra": json_values},
)


def dumps(value: Any, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


def broken(text: str, cut: int, insert: str) -> str:
    cut %= len(text) + 1
    return text[:cut] + insert


def nested_json(depth: int, shape: int) -> str:
    return [
        "[" * depth + "]" * depth,
        '{"a":' * depth + "1" + "}" * depth,
        "[" * depth,
        '[{"n":' * depth + "0" + "}]" * depth,
    ][shape]


def big_digits(count: int, sign: str, exponent: str) -> str:
    return sign + "1" + "0" * count + exponent


def huge_string(size: int, pattern: str) -> str:
    """A JSON string of about ``size`` bytes."""
    return '"' + pattern * (size // len(pattern.encode())) + '"'


def expanding(multibyte: int, numbers: int) -> str:
    # Each "é" is 2 bytes but one character; each 1e5 grows to 100000.0 when re-encoded.
    return '["' + "é" * multibyte + '",' + ",".join(["1e5"] * numbers) + "]"


# Under the 4 MiB limit as input (2 bytes per "é"), over it re-encoded (9 bytes per 1e5), yet
# under it counted in characters.
expanding_json = st.builds(
    expanding, st.integers(1_450_000, 1_500_000), st.integers(160_000, 290_000)
).map(str.encode)


def with_bad_utf8(text: str, at: int, bad: bytes) -> bytes:
    raw = text.encode()
    at %= len(raw) + 1
    return raw[:at] + bad + raw[at:]


# Hypothesis favours small integers; these buckets reach the limits often enough.
sizes = st.one_of(
    st.integers(0, 100),
    st.integers(60_000, 70_000),
    st.integers(1_000_000, 3_000_000),
    st.integers(4_200_000, 4_400_000),
)
valid_json = st.builds(dumps, json_values | count_inputs, st.booleans())
json_texts = weighted(
    (4, valid_json.map(str.encode)),
    (
        2,
        st.builds(huge_string, sizes, st.sampled_from(["x", "é", "\\u00e9", "😀"])).map(str.encode),
    ),
    (
        3,
        st.one_of(
            st.builds(broken, valid_json, st.integers(0), st.text(max_size=3)).map(str.encode),
            st.text(max_size=40).map(str.encode),
            st.builds(nested_json, st.integers(1, 100_000), st.integers(0, 3)).map(str.encode),
            st.sampled_from(["1e999999", "-1e999999", "1e-999999", "NaN", "Infinity", "-0"]).map(
                str.encode
            ),
            st.builds(
                big_digits,
                st.integers(300, 10_000),
                st.sampled_from(["", "-"]),
                st.sampled_from(["", ".5", "e5", "e-400"]),
            ).map(str.encode),
            expanding_json,
            st.builds(with_bad_utf8, valid_json, st.integers(0), st.sampled_from(BAD_UTF8)),
            st.sampled_from(['"\\ud800"', '"\\udfff"', '{"\\ud83d": 1}', '"\\u0000"', "\x00"]).map(
                str.encode
            ),
            st.just(b""),
        ),
    ),
)

value_inputs = st.one_of(
    json_values.map(value_bytes),
    count_inputs.map(value_bytes),
    st.integers(1, 100_000).map(nested_value_bytes),
    st.integers(1, 60).map(nested_value_bytes),
    st.binary(max_size=40),
    st.binary(min_size=8, max_size=8).map(lambda bits: tag(2, 1) + bits),  # NaN, infinities
    st.sampled_from(BAD_UTF8).map(lambda bad: len_field(3, b"ok" + bad)),
    st.sampled_from(BAD_UTF8).map(lambda bad: len_field(5, len_field(1, len_field(1, bad)))),
    st.just(b""),
)

# Mostly the defined encodings, so that calls get past the accept check to their input.
enum_numbers = weighted(
    (4, st.sampled_from([0, 1, 2])), (1, st.integers(-(2**31), 2**31 - 1)), (1, st.integers(0))
)
batch_sizes = st.sampled_from([0, 1, 2, 1024, 1025]) | st.integers(0, 2**32 - 1) | st.integers(0)


@st.composite
def unknown_fields(draw: st.DrawFn) -> bytes:
    """A field the message does not declare, or a declared one with the wrong wire type."""
    field = draw(st.integers(6, 2**29 - 1) | st.integers(1, 5))
    wire_type = draw(st.sampled_from([0, 1, 2, 3, 4, 5]))
    payload = {
        0: varint(draw(st.integers(0))),
        1: draw(st.binary(min_size=8, max_size=8)),
        2: (lambda data: varint(len(data)) + data)(draw(st.binary(max_size=30))),
        3: b"",  # a group start with no end: corrupt
        4: b"",
        5: draw(st.binary(min_size=4, max_size=4)),
    }[wire_type]
    return tag(field, wire_type) + payload


@st.composite
def invoke_requests(draw: st.DrawFn) -> bytes:
    """An InvokeRequest's bytes, written field by field, in any order, fields repeated."""
    if draw(st.integers(0, 19)) == 19:
        # An echo whose output outgrows its input: only the server's chunk limit refuses it.
        echo = len_field(1, draw(st.sampled_from([b"echo_async", b"echo_sync"])))
        json_field = len_field(2, draw(expanding_json))
        return Payload(echo + json_field + varint_field(5, draw(batch_sizes)))
    fields = []
    if draw(st.integers(0, 9)) != 9:  # hypothesis favours 0: make 0 the common case
        fields.append(len_field(1, draw(function_names)))
    inputs = draw(st.sampled_from(["none", "json", "json", "value", "value", "both"]))
    if inputs in ("json", "both"):
        fields.append(len_field(2, draw(json_texts)))
    if inputs in ("value", "both"):
        fields.append(len_field(3, draw(value_inputs)))
    if draw(st.booleans()):
        fields.append(varint_field(4, draw(enum_numbers)))
    if draw(st.booleans()):
        fields.append(varint_field(5, draw(batch_sizes)))
    if draw(st.integers(0, 3)) == 3:
        fields.extend(draw(st.lists(unknown_fields(), min_size=1, max_size=2)))
    if draw(st.integers(0, 9)) == 9:  # field 6: a Resume naming a random stream
        stream = len_field(1, draw(st.text(max_size=40)).encode())
        fields.append(len_field(6, stream + varint_field(2, draw(st.integers(0)))))
    if draw(st.integers(0, 9)) == 9 and fields:
        fields.append(draw(st.sampled_from(fields)))
    return Payload(b"".join(draw(st.permutations(fields))))


SEEDS = [
    serverfn_pb2.InvokeRequest(function="echo_async", json='{"a": [1, 2.5, "é"]}'),
    serverfn_pb2.InvokeRequest(function="count_async", json='{"n": 3}', max_batch=4),
    serverfn_pb2.InvokeRequest(function="count_sync", json='{"n": 2}', accept=2),
    serverfn_pb2.InvokeRequest(function="no_input"),
    serverfn_pb2.InvokeRequest(function="fail_after", value=codec.to_value({"n": 1})),
]
SEED_BYTES = [request.SerializeToString() for request in SEEDS]


def mutated(seed: bytes, edits: list[tuple[int, int, int, bytes]]) -> bytes:
    """Apply edits to a valid request: flip a bit, cut it short, splice or insert bytes."""
    data = bytearray(seed)
    for kind, at, bit, chunk in edits:
        at %= len(data) + 1
        if kind == 0 and at < len(data):
            data[at] ^= 1 << bit
        elif kind == 1:
            del data[at:]
        elif kind == 2:
            data[at : at + len(chunk)] = chunk
        else:
            data[at:at] = chunk
    return bytes(data)


edits = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0), st.integers(0, 7), st.binary(max_size=12)),
    min_size=1,
    max_size=3,
)


def oversized(limit: int, extra: int, filler: int) -> bytes:
    # A valid request with a JSON string long enough to pass the limit by `extra` bytes.
    head = len_field(1, b"echo_async")
    size = limit + extra
    return head + tag(2, 2) + varint(size) + bytes([filler]) * size


small_payloads = weighted(
    (1, st.just(b"")),
    (1, st.binary(max_size=200)),
    (1, st.binary(min_size=1, max_size=10).map(lambda unit: unit * 500)),
    (3, st.builds(mutated, st.sampled_from(SEED_BYTES), edits)),
)


@st.composite
def raw_payloads(draw: st.DrawFn, limit: int) -> bytes:
    """Whole-request bytes for a server whose receive limit is ``limit``."""
    # One in 25 is oversized: grpc takes a few tenths of a second to refuse each of those.
    if draw(st.integers(0, 24)) != 24:
        return Payload(draw(small_payloads))
    if draw(st.booleans()):
        return Payload(b"\xff" * draw(st.integers(limit + 1, limit + 4096)))
    extra = draw(st.integers(1, 2048))
    return Payload(oversized(limit, extra, draw(st.sampled_from([0x61, 0xFF]))))


# --- Calls and the oracle ----------------------------------------------------------------


Invoke = Callable[..., Any]


@pytest.fixture(scope="module")
def small_server() -> Iterator[RunningServer]:
    """tests.app again, with a 64 KiB message limit: oversized requests become cheap."""
    with run_in_thread(app.fns, limits=Limits(max_message_bytes=SMALL_LIMIT)) as running:
        yield running


def open_invoke(target: str) -> tuple[grpc.Channel, Invoke]:
    channel = grpc.insecure_channel(target)
    invoke = channel.unary_stream(
        "/serverfn.v1.ServerFunctions/Invoke",
        request_serializer=None,
        response_deserializer=serverfn_pb2.Chunk.FromString,
    )
    return channel, invoke


@pytest.fixture(scope="module")
def invokes(server: RunningServer, small_server: RunningServer) -> Iterator[dict[int, Invoke]]:
    """A raw Invoke for each server, keyed by its receive limit."""
    channels = []
    found: dict[int, Invoke] = {}
    for limit, running in ((DEFAULT_MAX_MESSAGE_BYTES, server), (SMALL_LIMIT, small_server)):
        channel, found[limit] = open_invoke(running.target)
        channels.append(channel)
    yield found
    for channel in channels:
        channel.close()


def call(invoke: Invoke, payload: bytes) -> tuple[Code, str, list[Any]]:
    """Send ``payload`` as the request; the status, its message and the values that came."""
    values: list[Any] = []
    stream = invoke(payload, timeout=60)
    try:
        for chunk in stream:
            values.extend(chunk_values(chunk))
            if len(values) >= MAX_CHUNKS_READ:
                stream.cancel()  # streaming fine so far; the rest would say nothing new
                return Code.OK, "", values
    except grpc.RpcError as error:
        return error.code(), error.details() or "", values
    return Code.OK, "", values


def chunk_values(chunk: serverfn_pb2.Chunk) -> list[Any]:
    which = chunk.WhichOneof("payload")
    if which == "json":
        return [codec.decode_json(chunk.json)]
    if which == "value":
        return [codec.from_value(chunk.value)]
    if which == "batch":
        texts = [codec.decode_json(text) for text in chunk.batch.json]
        return texts + [codec.from_value(value) for value in chunk.batch.values]
    return [None]


def parses(text: str) -> bool:
    try:
        codec.decode_json(text)
    except codec.JSONDecodeError:
        return False
    return True


class Expected(NamedTuple):
    """What a request explains: the statuses it may end with, the message's start when it is
    refused before any function runs, and the request as the server reads it."""

    codes: frozenset[Code]
    message: str = ""
    request: serverfn_pb2.InvokeRequest | None = None
    reaches_function: bool = False  # decodable, naming a function the server goes on to run


def expected(payload: bytes, limit: int) -> Expected:
    if len(payload) > limit:
        return Expected(frozenset({Code.RESOURCE_EXHAUSTED}), "SERVER: Received message larger")
    try:
        request = serverfn_pb2.InvokeRequest.FromString(payload)
    except DecodeError:
        not_valid = "the request is not a valid serverfn.v1.InvokeRequest: "
        return Expected(frozenset({Code.INVALID_ARGUMENT}), not_valid)
    name = request.function
    resuming = "resume" in request.DESCRIPTOR.fields_by_name and request.HasField("resume")
    if app.fns.get(name) is None and not (resuming and not name):
        return Expected(frozenset({Code.NOT_FOUND}), "unknown server function ", request)
    if resuming:  # a random stream id: unknown, or another function's
        return Expected(frozenset({Code.NOT_FOUND, Code.INVALID_ARGUMENT}), "", request)
    assert name in DESIGNED, f"the fuzzer must not call {name!r}"
    if request.accept not in serverfn_pb2.Encoding.values():  # checked before the input
        unknown = "unknown accept encoding "
        return Expected(frozenset({Code.INVALID_ARGUMENT}), unknown, request, True)
    if request.WhichOneof("input") == "json" and request.json and not parses(request.json):
        return Expected(frozenset({Code.INVALID_ARGUMENT}), "malformed JSON input: ", request, True)
    return Expected(DESIGNED[name], "", request, True)


class Tally:
    """How many inputs a property tried, and the statuses they ended with."""

    def __init__(self) -> None:
        self.tried = 0
        self.reached = 0
        self.codes: collections.Counter[str] = collections.Counter()

    def assert_reached(self, codes: tuple[str, ...]) -> None:
        """The mix reached every kind of outcome (1% or more each), not only one refusal."""
        for code in codes:
            assert self.codes[code] * 100 >= self.tried, self.report(f"too few {code}")

    def report(self, what: str) -> str:
        mix = ", ".join(f"{code} {count}" for code, count in self.codes.most_common())
        return f"{what}: {self.tried} inputs tried, {self.reached} reached a function ({mix})"


def check(invokes: dict[int, Invoke], limit: int, payload: bytes, tally: Tally) -> None:
    """One input: the status it explains, a clean message, the right values; then the server
    still answers a normal call."""
    tally.tried += 1
    payload = bytes(payload)  # grpc takes exactly bytes, not a subclass
    want = expected(payload, limit)
    request = want.request
    tally.reached += want.reaches_function
    code, details, values = call(invokes[limit], payload)
    tally.codes[code.name] += 1
    shown = (payload[:60], len(payload), code, details[:300])
    assert code in want.codes, shown
    assert details.startswith(want.message), shown
    assert not any(leak in ECHOED.sub("", details) for leak in LEAKS), shown
    # Echoed input is cut short: trailers past the client's metadata limit would turn the
    # status into RESOURCE_EXHAUSTED.
    assert len(details) < 2000, shown
    if code is Code.RESOURCE_EXHAUSTED and len(payload) <= limit:
        # The request fitted: only the server's own chunk limit may refuse its output.
        assert "bytes, over the server's limit of" in details, shown
    if code is Code.OK and request is not None:
        check_values(request, values, shown)
    assert call(invokes[limit], HEALTHY) == (Code.OK, "", [1]), "the server stopped serving"


HEALTHY = serverfn_pb2.InvokeRequest(function="echo_async", json="1").SerializeToString()


def check_values(request: serverfn_pb2.InvokeRequest, values: list[Any], shown: object) -> None:
    """A call that succeeded delivered what its function computes from the input."""
    name, which = request.function, request.WhichOneof("input")
    if name.startswith("echo_") and which == "json" and request.accept in (0, 1):
        # No input (an empty json) is None, which echo's `data: Any` accepts.
        assert values == [codec.decode_json(request.json) if request.json else None], shown
    elif name.startswith("count_"):
        assert values == list(range(len(values))), shown


SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_structured_requests_end_with_the_status_they_explain(
    invokes: dict[int, Invoke],
) -> None:
    tally = Tally()

    @SETTINGS
    @given(payload=invoke_requests())
    def property_holds(payload: bytes) -> None:
        check(invokes, DEFAULT_MAX_MESSAGE_BYTES, payload, tally)

    property_holds()
    print(tally.report("structured InvokeRequests"))
    assert tally.tried >= EXAMPLES, tally.report("hypothesis stopped early")
    tally.assert_reached(("OK", "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED"))


def test_raw_bytes_end_with_the_status_they_explain(invokes: dict[int, Invoke]) -> None:
    tally = Tally()
    limits = st.sampled_from([DEFAULT_MAX_MESSAGE_BYTES, SMALL_LIMIT])
    requests = limits.flatmap(lambda limit: st.tuples(st.just(limit), raw_payloads(limit)))

    @SETTINGS
    @given(request=requests)
    def property_holds(request: tuple[int, bytes]) -> None:
        check(invokes, *request, tally)

    property_holds()
    print(tally.report("raw request bytes"))
    assert tally.tried >= EXAMPLES, tally.report("hypothesis stopped early")
    tally.assert_reached(("OK", "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED"))
