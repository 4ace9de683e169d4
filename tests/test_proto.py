"""The wire contract in protos/: the committed generated code matches it, every element of it is
documented, and the names and shapes clients depend on are there."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from tests.conftest import assert_same_files, regenerate

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PROTO_FILE = "serverfn/v1/serverfn.proto"
GENERATED = ROOT / "grpc_serverfn" / "_proto"

FieldType = descriptor_pb2.FieldDescriptorProto

# Field numbers of the DescriptorProto messages, as SourceCodeInfo paths use them.
FILE_MESSAGE, FILE_ENUM, FILE_SERVICE = 4, 5, 6
MESSAGE_FIELD, MESSAGE_NESTED, MESSAGE_ENUM, MESSAGE_ONEOF = 2, 3, 4, 8
ENUM_VALUE = 2
SERVICE_METHOD = 2


def test_generated_code_has_not_drifted_from_the_proto(tmp_path: Path) -> None:
    regenerate("gen-proto", tmp_path / "generated")
    assert_same_files(tmp_path / "generated", GENERATED, "gen-proto")


@pytest.fixture(scope="module")
def proto_file(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorProto:
    """protos/serverfn/v1/serverfn.proto as protoc parses it, with its comments."""
    descriptor_set = tmp_path_factory.mktemp("descriptors") / "serverfn.binpb"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",  # adds the include path of google/protobuf/*.proto itself
            f"-I{PROTO_ROOT}",
            "--include_source_info",
            f"--descriptor_set_out={descriptor_set}",
            PROTO_FILE,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"protoc failed:\n{result.stdout}{result.stderr}"
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file
    [parsed] = [file for file in files if file.name == PROTO_FILE]
    return parsed


def documented_elements(
    proto: descriptor_pb2.FileDescriptorProto,
) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Every message, field, oneof, enum, enum value, service and rpc, with its source path."""

    def enum(
        descriptor: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], prefix: str
    ) -> Iterator[tuple[str, tuple[int, ...]]]:
        name = f"{prefix}{descriptor.name}"
        yield f"enum {name}", path
        for index, value in enumerate(descriptor.value):
            yield f"enum value {name}.{value.name}", (*path, ENUM_VALUE, index)

    def message(
        descriptor: descriptor_pb2.DescriptorProto, path: tuple[int, ...], prefix: str
    ) -> Iterator[tuple[str, tuple[int, ...]]]:
        name = f"{prefix}{descriptor.name}"
        yield f"message {name}", path
        for index, field in enumerate(descriptor.field):
            yield f"field {name}.{field.name}", (*path, MESSAGE_FIELD, index)
        for index, oneof in enumerate(descriptor.oneof_decl):
            yield f"oneof {name}.{oneof.name}", (*path, MESSAGE_ONEOF, index)
        for index, nested in enumerate(descriptor.nested_type):
            yield from message(nested, (*path, MESSAGE_NESTED, index), f"{name}.")
        for index, nested_enum in enumerate(descriptor.enum_type):
            yield from enum(nested_enum, (*path, MESSAGE_ENUM, index), f"{name}.")

    for index, descriptor in enumerate(proto.message_type):
        yield from message(descriptor, (FILE_MESSAGE, index), "")
    for index, descriptor in enumerate(proto.enum_type):
        yield from enum(descriptor, (FILE_ENUM, index), "")
    for index, service in enumerate(proto.service):
        yield f"service {service.name}", (FILE_SERVICE, index)
        for method_index, method in enumerate(service.method):
            yield (
                f"rpc {service.name}.{method.name}",
                (FILE_SERVICE, index, SERVICE_METHOD, method_index),
            )


def test_every_element_of_the_proto_has_a_leading_comment(
    proto_file: descriptor_pb2.FileDescriptorProto,
) -> None:
    comments = {
        tuple(location.path): location.leading_comments
        for location in proto_file.source_code_info.location
    }
    elements = list(documented_elements(proto_file))
    assert len(elements) > 20  # the walk found the file's contents
    undocumented = [name for name, path in elements if not comments.get(path, "").strip()]
    assert not undocumented, (
        f"{PROTO_FILE}: give each of these a leading // comment: {', '.join(undocumented)}"
    )


def message_named(
    proto: descriptor_pb2.FileDescriptorProto, name: str
) -> descriptor_pb2.DescriptorProto:
    [message] = [message for message in proto.message_type if message.name == name]
    return message


def fields_of(
    message: descriptor_pb2.DescriptorProto,
) -> dict[str, descriptor_pb2.FieldDescriptorProto]:
    return {field.name: field for field in message.field}


def oneof_of(
    message: descriptor_pb2.DescriptorProto, field: descriptor_pb2.FieldDescriptorProto
) -> str | None:
    if not field.HasField("oneof_index") or field.proto3_optional:
        return None
    return message.oneof_decl[field.oneof_index].name


def test_the_service_and_its_rpcs(proto_file: descriptor_pb2.FileDescriptorProto) -> None:
    assert proto_file.package == "serverfn.v1"
    [service] = [service for service in proto_file.service if service.name == "ServerFunctions"]
    methods = {method.name: method for method in service.method}
    invoke = methods["Invoke"]
    assert (invoke.input_type, invoke.output_type) == (
        ".serverfn.v1.InvokeRequest",
        ".serverfn.v1.Chunk",
    )
    assert invoke.server_streaming
    assert not invoke.client_streaming
    list_functions = methods["ListFunctions"]
    assert (list_functions.input_type, list_functions.output_type) == (
        ".serverfn.v1.ListFunctionsRequest",
        ".serverfn.v1.ListFunctionsResponse",
    )
    assert not list_functions.server_streaming
    assert not list_functions.client_streaming


def test_invoke_request_fields(proto_file: descriptor_pb2.FileDescriptorProto) -> None:
    request = message_named(proto_file, "InvokeRequest")
    fields = fields_of(request)
    function, json, value, accept = (
        fields[name] for name in ("function", "json", "value", "accept")
    )
    assert (function.number, function.type) == (1, FieldType.TYPE_STRING)
    assert oneof_of(request, function) is None
    assert (json.number, json.type) == (2, FieldType.TYPE_STRING)
    assert (value.number, value.type, value.type_name) == (
        3,
        FieldType.TYPE_MESSAGE,
        ".google.protobuf.Value",
    )
    assert oneof_of(request, json) == oneof_of(request, value) == "input"
    assert (accept.number, accept.type, accept.type_name) == (
        4,
        FieldType.TYPE_ENUM,
        ".serverfn.v1.Encoding",
    )
    assert oneof_of(request, accept) is None


def test_chunk_fields(proto_file: descriptor_pb2.FileDescriptorProto) -> None:
    chunk = message_named(proto_file, "Chunk")
    fields = fields_of(chunk)
    json, value, seq = (fields[name] for name in ("json", "value", "seq"))
    assert (json.number, json.type) == (1, FieldType.TYPE_STRING)
    assert (value.number, value.type, value.type_name) == (
        2,
        FieldType.TYPE_MESSAGE,
        ".google.protobuf.Value",
    )
    assert oneof_of(chunk, json) == oneof_of(chunk, value) == "payload"
    assert (seq.number, seq.type) == (3, FieldType.TYPE_UINT32)
    assert oneof_of(chunk, seq) is None


def test_encoding_values(proto_file: descriptor_pb2.FileDescriptorProto) -> None:
    [encoding] = [enum for enum in proto_file.enum_type if enum.name == "Encoding"]
    assert {value.name: value.number for value in encoding.value} == {
        "ENCODING_UNSPECIFIED": 0,
        "ENCODING_JSON": 1,
        "ENCODING_VALUE": 2,
    }


def test_no_field_anywhere_is_bytes(proto_file: descriptor_pb2.FileDescriptorProto) -> None:
    def all_fields(
        messages: list[descriptor_pb2.DescriptorProto], prefix: str
    ) -> Iterator[tuple[str, descriptor_pb2.FieldDescriptorProto]]:
        for message in messages:
            for field in message.field:
                yield f"{prefix}{message.name}.{field.name}", field
            yield from all_fields(list(message.nested_type), f"{prefix}{message.name}.")

    fields = list(all_fields(list(proto_file.message_type), ""))
    assert fields
    as_bytes = [name for name, field in fields if field.type == FieldType.TYPE_BYTES]
    assert not as_bytes, f"payloads are JSON, never bytes: {as_bytes}"


BUF = ROOT / "clients" / "typescript" / "node_modules" / ".bin" / "buf"
RELEASED = PROTO_ROOT / "serverfn-v1.released.binpb"


def buf(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    assert BUF.exists(), "run scripts/test: it installs buf with clients/typescript's packages"
    return subprocess.run(
        [str(BUF), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_buf_lint_passes_with_the_standard_rules() -> None:
    """buf.yaml: STANDARD, with the two names the wire contract fixes as its only exceptions."""
    result = buf("lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_breaking_finds_no_incompatible_change_since_the_release() -> None:
    result = buf("breaking", "--against", str(RELEASED))
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_breaking_fails_an_incompatible_change(tmp_path: Path) -> None:
    """What the check above guards: a field renumbered in a copy of the proto fails it."""
    (tmp_path / "protos").mkdir()
    subprocess.run(["cp", "-r", str(PROTO_ROOT / "serverfn"), str(tmp_path / "protos")], check=True)
    (tmp_path / "buf.yaml").write_text((ROOT / "buf.yaml").read_text())
    proto = tmp_path / "protos" / PROTO_FILE
    text = proto.read_text()
    assert "string function = 1;" in text
    proto.write_text(text.replace("string function = 1;", "string function = 99;"))
    result = buf("breaking", "--against", str(RELEASED), cwd=tmp_path)
    assert result.returncode != 0
    assert "InvokeRequest" in result.stdout, result.stdout
