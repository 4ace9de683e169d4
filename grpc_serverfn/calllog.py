"""The call log: one line per call at its end, through the standard logging module.

``CallLog`` is an observer (see ``grpc_serverfn.observe``) writing to the logger
``grpc_serverfn.calls``. The message reads on its own (one line)::

    count_async OK chunks=5 duration_ms=1.234 first_chunk_ms=0.412
    peer=ipv4:127.0.0.1:53124 call_id=3f9a1c-7

A call over the web port adds ``protocol=connect`` or ``protocol=grpc-web`` (a gRPC call's line
leaves ``protocol=grpc`` out, as most lines would carry it). The same fields ride on the record
as ``serverfn_*`` attributes (``serverfn_function``, ``serverfn_code``, ``serverfn_chunks``,
``serverfn_protocol``, ...), so a JSON formatter such as ``json_formatter()``
emits them as keys. The prefix keeps them apart from other libraries' fields in a shared log
index, where a bare ``code`` would clash.

Levels: WARNING for the codes that mean the server failed or could not serve (``SERVER_SIDE``:
INTERNAL, UNKNOWN, DATA_LOSS, UNAVAILABLE, UNIMPLEMENTED, RESOURCE_EXHAUSTED, ABORTED), so
``--log-level WARNING`` keeps exactly the calls an operator should look at; INFO for the rest,
which the caller brought about: OK, cancelled, out of time, refused input or access. The
traceback of an unexpected exception is a separate ERROR line of ``grpc_serverfn.server`` naming
the same call id, which the caller's INTERNAL message carries too.

Lines are written in batches (``observe.Deferred``: up to 64 calls, at most ``delay``, 50 ms,
after a call ends, and all at once when the server stops), each with the time its call
ended: written one at a time between calls, the logging code is cold and costs three times as
much.

Payloads are never logged unless ``CallLog(log_payloads=True)``, and then cut to
``max_payload_chars``. With the logger disabled for the level, a call costs one
``isEnabledFor`` check.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc
import orjson

from .observe import DEFAULT_DELAY, CallRecord, Deferred
from .registry import NO_INPUT

__all__ = ["DEFAULT_MAX_PAYLOAD_CHARS", "LOGGER_NAME", "SERVER_SIDE", "CallLog", "json_formatter"]

LOGGER_NAME = "grpc_serverfn.calls"
DEFAULT_MAX_PAYLOAD_CHARS = 500

SERVER_SIDE = frozenset(
    {
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)
"""Status codes logged at WARNING: the server failed, was overloaded or stopped."""


class CallLog:
    """An observer logging one line per call when it ends (see the module docstring); a line
    waits at most ``delay`` seconds to be written with others (0: written at once)."""

    def __init__(
        self,
        *,
        logger: logging.Logger | None = None,
        log_payloads: bool = False,
        max_payload_chars: int = DEFAULT_MAX_PAYLOAD_CHARS,
        delay: float = DEFAULT_DELAY,
    ) -> None:
        self.logger = logger if logger is not None else logging.getLogger(LOGGER_NAME)
        self.log_payloads = log_payloads
        self.max_payload_chars = max_payload_chars
        self._lines: Deferred[tuple[CallRecord, int, float]] = Deferred(self._write, delay=delay)

    def call_started(self, record: CallRecord) -> None:
        """Nothing to do until the end."""

    def call_ended(self, record: CallRecord, token: None) -> None:
        """Put the call's line off to a batch (see ``Deferred``), if the logger is enabled for
        its level; the line keeps the time the call ended."""
        level = logging.WARNING if record.code in SERVER_SIDE else logging.INFO
        if self.logger.isEnabledFor(level):
            self._lines.add((record, level, time.time()))

    def flush(self) -> None:
        """Write every line put off so far."""
        self._lines.flush()

    def _write(self, lines: list[tuple[CallRecord, int, float]]) -> None:
        logger = self.logger
        for record, level, ended in lines:
            text, args, fields = self._line(record)
            # makeRecord and handle are what Logger.log calls, less the search of the stack for
            # the caller, which would find this batch, not the call.
            line = logger.makeRecord(
                logger.name, level, __file__, 0, text, tuple(args), None, extra=fields
            )
            line.relativeCreated -= (line.created - ended) * 1000
            line.created = ended
            line.msecs = int((ended - int(ended)) * 1000) + 0.0  # as LogRecord does
            logger.handle(line)

    def _line(self, record: CallRecord) -> tuple[str, list[Any], dict[str, Any]]:
        """The message (with %-arguments) and the ``serverfn_*`` fields of a call's line."""
        code = record.code
        duration_ms = round(record.duration * 1000, 3)
        first = record.time_to_first_chunk
        first_ms = None if first is None else round(first * 1000, 3)
        fields: dict[str, Any] = {
            "serverfn_function": record.function,
            "serverfn_code": code.name,
            "serverfn_chunks": record.sent.chunks,
            "serverfn_messages": record.sent.messages,
            "serverfn_duration_ms": duration_ms,
            "serverfn_first_chunk_ms": first_ms,
            "serverfn_peer": record.peer,
            "serverfn_call_id": record.call_id,
            "serverfn_protocol": record.protocol,
            "serverfn_resumed": record.resumed,
        }
        # Built with %-arguments, so a handler that drops the record never formats it.
        text = "%s %s chunks=%d duration_ms=%.3f"
        args: list[Any] = [record.function, code.name, record.sent.chunks, duration_ms]
        if first_ms is not None:
            text += " first_chunk_ms=%.3f"
            args.append(first_ms)
        text += " peer=%s call_id=%s"
        args += [record.peer or "-", record.call_id]
        if record.protocol != "grpc":
            text += " protocol=%s"
            args.append(record.protocol)
        if record.resumed:
            text += " resumed=true"
        if code is not grpc.StatusCode.OK:
            fields["serverfn_error"] = record.error_message
            text += " error=%s"
            args.append(_quoted(record.error_message))
        if self.log_payloads:
            payload = _payload(record.input, self.max_payload_chars)
            fields["serverfn_input"] = payload
            if payload is not None:
                text += " input=%s"
                args.append(payload)
        return text, args, fields


def _quoted(text: str) -> str:
    return orjson.dumps(text).decode()


def _payload(value: Any, limit: int) -> str | None:
    """The input as compact JSON cut to ``limit`` characters; None for a call without one."""
    if value is None or value is NO_INPUT:
        return None
    try:
        text = orjson.dumps(value).decode()
    except TypeError:  # e.g. an integer beyond 64 bits
        text = repr(value)
    if len(text) > limit:
        return f"{text[:limit]}... (cut from {len(text)} characters)"
    return text


def json_formatter(*, process: bool = False) -> logging.Formatter:
    """A formatter writing each record as one JSON object on one line: ``time`` (UTC, ISO 8601),
    ``level``, ``logger``, ``message``, ``pid`` with ``process=True``, a traceback as the string
    ``exception``, and every extra attribute of the record (a call line's ``serverfn_*``)."""
    from pythonjsonlogger.orjson import OrjsonFormatter

    fields = ["levelname", "name", "message", *(["process"] if process else [])]
    return OrjsonFormatter(
        fields,
        rename_fields={
            "levelname": "level",
            "name": "logger",
            "process": "pid",
            "exc_info": "exception",
            "stack_info": "stack",
        },
        timestamp="time",
        # A default is placed first and the timestamp later overwrites it in place, so each
        # line starts with its time.
        defaults={"time": None},
    )
