"""The demo app: the three use cases grpc-serverfn exists for, runnable offline.

    grpc-serverfn serve examples/demo.py:fns        (scripts/serve does this)

- ``stream_data``: progress updates through a multi-step job.
- ``stream_chat``: an LLM reply streamed token by token. With ``OPENAI_API_KEY`` set (and
  optionally ``OPENAI_BASE_URL``, ``OPENAI_MODEL``) it streams from the OpenAI chat completions
  API; without it, a deterministic local reply, so the demo needs no network.
- ``process_large_file``: a long CSV job reporting progress every 100 records.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import os
import re
from collections.abc import AsyncIterator
from typing import Any, NotRequired

from pydantic import BaseModel, Field
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from grpc_serverfn import FailedPrecondition, InvalidArgument, Registry, Unavailable

fns = Registry()

STEP_SECONDS = float(os.environ.get("DEMO_STEP_SECONDS", "0.05"))
TOKEN_SECONDS = float(os.environ.get("DEMO_TOKEN_SECONDS", "0.02"))
RECORD_SECONDS = float(os.environ.get("DEMO_RECORD_SECONDS", "0"))
logger = logging.getLogger("demo")
PROGRESS_EVERY = 100


class Progress(TypedDict):
    progress: int
    done: NotRequired[bool]


async def do_step() -> None:
    await asyncio.sleep(STEP_SECONDS)


@fns.server_fn
async def stream_data() -> AsyncIterator[Progress]:
    """Run a three-step job, reporting progress 0, 33, 66 and 100 (with done: true)."""
    yield {"progress": 0}
    await do_step()
    yield {"progress": 33}
    await do_step()
    yield {"progress": 66}
    await do_step()
    yield {"progress": 100, "done": True}


class ChatInput(BaseModel):
    message: str = Field(min_length=1, max_length=8000, description="The user's message")


class ChatToken(TypedDict):
    text: str


# resumable=True: the reply is kept as it streams, so a page reloaded (or a connection dropped)
# in the middle of it picks it up where it was, with no token lost or repeated.
@fns.server_fn(method="POST", resumable=True)
async def stream_chat(data: ChatInput) -> AsyncIterator[ChatToken]:
    """Stream a chat reply token by token (OpenAI when OPENAI_API_KEY is set, else local)."""
    tokens = (
        _openai_tokens(data.message)
        if os.environ.get("OPENAI_API_KEY")
        else _local_tokens(data.message)
    )
    async for token in tokens:
        yield {"text": token}


def local_reply(message: str) -> str:
    """The offline reply: deterministic, so tests and demos can rely on it."""
    return (
        f'You said: "{message}". This reply is streamed token by token by a local stand-in for '
        "a language model; set OPENAI_API_KEY to stream from OpenAI instead."
    )


async def _local_tokens(message: str) -> AsyncIterator[str]:
    for token in re.findall(r"\S+\s*", local_reply(message)):
        await asyncio.sleep(TOKEN_SECONDS)
        yield token


async def _openai_tokens(message: str) -> AsyncIterator[str]:
    try:
        import openai
    except ImportError:
        raise FailedPrecondition(
            "OPENAI_API_KEY is set but the openai package is not installed;"
            " pip install 'grpc-serverfn[openai]'"
        ) from None
    client = openai.AsyncOpenAI()  # reads OPENAI_API_KEY and OPENAI_BASE_URL
    try:
        response = await client.chat.completions.create(
            model=os.environ.get("OPENAI_MODEL", "gpt-4o-mini"),
            messages=[{"role": "user", "content": message}],
            stream=True,
        )
        async for chunk in response:
            content = chunk.choices[0].delta.content if chunk.choices else None
            if content:
                yield content
    except openai.APIError as error:
        raise Unavailable(f"the OpenAI API failed ({type(error).__name__})") from error
    finally:
        await client.close()


class FileInput(BaseModel):
    file: str = Field(description="CSV text, header row first")


class FileProgress(TypedDict):
    processed: int
    total: int
    percent: int
    complete: NotRequired[bool]


def parse_csv(text: str) -> list[dict[str, str]]:
    """Parse CSV text with a header row; raises InvalidArgument naming the bad line."""
    reader = csv.reader(io.StringIO(text), strict=True)
    try:
        header = next(reader, None)
        if not header:
            raise _bad_csv(1, "the CSV is empty; expected a header row")
        records = []
        for row in reader:
            if not row:
                continue  # blank line
            if len(row) != len(header):
                raise _bad_csv(reader.line_num, f"expected {len(header)} fields, got {len(row)}")
            records.append(dict(zip(header, row, strict=True)))
    except csv.Error as error:
        raise _bad_csv(reader.line_num, str(error)) from None
    return records


def _bad_csv(line: int, problem: str) -> InvalidArgument:
    return InvalidArgument(
        f"bad CSV at line {line}: {problem}", field_violations=[("file", f"line {line}: {problem}")]
    )


async def process_record(record: dict[str, str]) -> dict[str, Any]:
    await asyncio.sleep(RECORD_SECONDS)  # a real job awaits I/O here; other calls go on
    return {key.strip(): value.strip() for key, value in record.items()}


@fns.server_fn(method="POST")
async def process_large_file(data: FileInput) -> AsyncIterator[FileProgress]:
    """Process every CSV record, reporting progress every 100 records and at the end."""
    records = parse_csv(data.file)
    total = len(records)
    done = 0
    try:
        for index, record in enumerate(records):
            if index % PROGRESS_EVERY == 0:
                yield {"processed": index, "total": total, "percent": round(index * 100 / total)}
            await process_record(record)
            done += 1
        yield {"processed": total, "total": total, "percent": 100, "complete": True}
    finally:
        # Runs when the caller goes away too (a closed page, an aborted fetch): the place to
        # release what the job holds.
        if done < total:
            logger.info("process_large_file stopped after %d of %d records", done, total)
