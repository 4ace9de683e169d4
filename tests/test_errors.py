"""Every way a call can fail: the status code, its message and details, and what is not lost."""

from __future__ import annotations

import logging

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from grpc_serverfn import (
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    ServerFnError,
)
from grpc_serverfn._proto.serverfn.v1 import serverfn_pb2
from tests.conftest import Caller


def test_an_unknown_function_is_not_found(invoke: Caller) -> None:
    outcome = invoke("does_not_exist")
    assert isinstance(outcome.error, NotFound)
    assert outcome.error.code is grpc.StatusCode.NOT_FOUND
    assert "'does_not_exist'" in outcome.error.message
    assert outcome.chunks == []


def test_malformed_json_is_invalid_argument_with_the_position(stub: object) -> None:
    request = serverfn_pb2.InvokeRequest(function="echo_async", json='{"a": 1,, }')
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Invoke(request))  # type: ignore[attr-defined]
    error = caught.value
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "malformed JSON" in error.details()  # type: ignore[attr-defined]
    assert "line 1 column 9" in error.details()  # type: ignore[attr-defined]


def test_a_handler_error_mid_stream_arrives_after_the_chunks_before_it(invoke: Caller) -> None:
    outcome = invoke("fail_after", {"n": 3})
    assert outcome.chunks == [0, 1, 2]
    assert isinstance(outcome.error, FailedPrecondition)
    assert outcome.error.message == "the widget is not ready"


def test_a_sync_generator_error_mid_stream_keeps_its_chunks_and_code(invoke: Caller) -> None:
    outcome = invoke("fail_after_sync", {"n": 2})
    assert outcome.chunks == [0, 1]
    assert isinstance(outcome.error, NotFound)
    assert outcome.error.message == "no such widget: w-42"


def test_an_unexpected_exception_is_internal_without_leaking_its_text(
    invoke: Caller, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="grpc_serverfn.server"):
        outcome = invoke("crash_after", {"n": 2})
    assert outcome.chunks == [0, 1]
    assert isinstance(outcome.error, Internal)
    assert "crash_after" in outcome.error.message
    assert "hunter2" not in outcome.error.message
    assert "Traceback" not in outcome.error.message
    assert outcome.error.details == []
    # ...and the traceback is in the server's log instead.
    logged = [record for record in caplog.records if record.exc_info]
    assert any("password=hunter2" in str(record.exc_info[1]) for record in logged)  # type: ignore[index]


def test_an_unexpected_exception_in_a_plain_sync_function_is_internal(invoke: Caller) -> None:
    outcome = invoke("crash_sync")
    assert isinstance(outcome.error, Internal)
    assert "hunter2" not in outcome.error.message


def test_an_unencodable_value_ends_the_stream_naming_function_and_type(invoke: Caller) -> None:
    outcome = invoke("unencodable", {"n": 2})
    assert outcome.chunks == [0, 1]
    assert isinstance(outcome.error, Internal)
    assert "'unencodable'" in outcome.error.message
    assert "'object'" in outcome.error.message


def test_validation_errors_carry_a_bad_request_naming_every_field(invoke: Caller) -> None:
    outcome = invoke("count_async", {"n": -1, "probe": 7})
    assert isinstance(outcome.error, InvalidArgument)
    fields = dict(outcome.error.field_violations)
    assert set(fields) == {"n", "probe"}
    assert "greater than or equal to 0" in fields["n"]
    assert "valid string" in fields["probe"]
    assert "count_async" in outcome.error.message


def test_raised_invalid_argument_sends_its_field_violations(invoke: Caller) -> None:
    outcome = invoke("raise_invalid")
    assert isinstance(outcome.error, InvalidArgument)
    assert outcome.error.message == "two fields are wrong"
    assert outcome.error.field_violations == [("a", "must be set"), ("b.c", "too long")]


def test_details_travel_as_google_rpc_status_in_the_trailer(stub: object) -> None:
    """What any other language's client sees: the standard trailer, message equal to status."""
    request = serverfn_pb2.InvokeRequest(function="count_async", json='{"n": "many"}')
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Invoke(request))  # type: ignore[attr-defined]
    error = caught.value
    trailers = dict(error.trailing_metadata())  # type: ignore[attr-defined]
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert status.message == error.details()  # type: ignore[attr-defined]
    (detail,) = status.details
    bad_request = error_details_pb2.BadRequest()
    assert detail.Unpack(bad_request)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("n", "Input should be a valid integer, unable to parse string as an integer")
    ]


def test_an_unknown_accept_encoding_is_invalid_argument(stub: object) -> None:
    request = serverfn_pb2.InvokeRequest(function="no_input", accept=7)  # type: ignore[arg-type]
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Invoke(request))  # type: ignore[attr-defined]
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "accept" in caught.value.details()  # type: ignore[attr-defined]


def test_the_server_keeps_serving_after_every_kind_of_failure(invoke: Caller) -> None:
    for function, data in [
        ("crash_after", {"n": 1}),
        ("unencodable", {"n": 0}),
        ("does_not_exist", None),
        ("count_async", {"n": "x"}),
    ]:
        assert invoke(function, data).error is not None
    assert invoke("count_async", {"n": 3}).chunks == [0, 1, 2]


def test_client_errors_are_server_fn_errors_with_readable_str(invoke: Caller) -> None:
    outcome = invoke("fail_after", {"n": 0})
    assert isinstance(outcome.error, ServerFnError)
    assert str(outcome.error) == "FAILED_PRECONDITION: the widget is not ready"


def test_a_huge_error_message_is_cut_rather_than_overflowing_the_trailers(
    invoke: Caller,
) -> None:
    outcome = invoke("fail_with", "x" * 50_000)
    assert outcome.chunks == [0]
    assert isinstance(outcome.error, FailedPrecondition)  # not the client's metadata limit
    assert outcome.error.message == "x" * 1000 + "... (cut from 50000 characters)"
