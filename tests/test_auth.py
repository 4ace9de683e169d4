"""Bearer-token authentication and per-function roles, with allowed and refused callers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from grpc_serverfn import (
    Client,
    Context,
    Identity,
    NotFound,
    PermissionDenied,
    Registry,
    Unauthenticated,
    bearer_auth,
)
from grpc_serverfn.testing import RunningServer, run_in_thread

TOKENS = {
    "t-ada": Identity("ada", frozenset({"admin", "staff"}), {"team": "core"}),
    "t-bob": Identity("bob", frozenset({"staff"})),
}


async def verify(token: str) -> Identity | None:
    await asyncio.sleep(0)  # an async check (a token service, a JWKS fetch) is fine
    return TOKENS.get(token)


fns = Registry(middleware=[bearer_auth(verify, public={"ping"})])


@fns.server_fn
async def ping() -> str:
    return "pong"


@fns.server_fn
async def whoami(ctx: Context) -> dict[str, object]:
    assert ctx.identity is not None
    return {"subject": ctx.identity.subject, "roles": sorted(ctx.identity.roles)}


@fns.server_fn(require_roles={"admin"})
async def purge(ctx: Context) -> AsyncIterator[str]:
    assert ctx.identity is not None
    yield f"purged by {ctx.identity.subject}"


@fns.server_fn(resumable=True)
async def story(data: int, ctx: Context) -> AsyncIterator[str]:
    """A resumable stream of `data` lines, each naming who started it."""
    assert ctx.identity is not None
    for i in range(data):
        yield f"{ctx.identity.subject}:{i}"
        await asyncio.sleep(0.01)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with run_in_thread(fns) as running:
        yield running


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_a_public_function_needs_no_token(server: RunningServer) -> None:
    with Client(server.target) as client:
        assert client.call("ping") == "pong"


def test_a_call_without_a_token_is_unauthenticated(server: RunningServer) -> None:
    with Client(server.target) as client, pytest.raises(Unauthenticated, match="Bearer"):
        client.call("whoami")


@pytest.mark.parametrize("header", ["Bearer nope", "Basic dXNlcjpwdw==", "t-ada"])
def test_a_bad_or_foreign_token_is_unauthenticated(server: RunningServer, header: str) -> None:
    client = Client(server.target, metadata={"authorization": header})
    with client, pytest.raises(Unauthenticated):
        client.call("whoami")


def test_the_handler_sees_who_called(server: RunningServer) -> None:
    with Client(server.target, metadata=bearer("t-bob")) as client:
        assert client.call("whoami") == {"subject": "bob", "roles": ["staff"]}


def test_a_function_requiring_a_role_refuses_callers_without_it(server: RunningServer) -> None:
    bob = Client(server.target, metadata=bearer("t-bob"))
    with bob, pytest.raises(PermissionDenied, match="requires the role"):
        list(bob.invoke("purge"))
    with Client(server.target, metadata=bearer("t-ada")) as client:
        assert list(client.invoke("purge")) == ["purged by ada"]


def test_required_roles_are_recorded_at_registration() -> None:
    assert fns["purge"].required_roles == frozenset({"admin"})
    assert fns["whoami"].required_roles == frozenset()


def test_a_resumable_stream_resumes_and_cancels_for_its_owner_only(server: RunningServer) -> None:
    ada = Client(server.target, metadata=bearer("t-ada"))
    bob = Client(server.target, metadata=bearer("t-bob"))
    anonymous = Client(server.target)
    with ada, bob, anonymous:
        stream = ada.invoke("story", 300)
        assert next(iter(stream)) == "ada:0"
        stream_id = stream.stream_id()
        assert stream_id is not None
        stream.cancel()
        # Without a token, a resume or a cancel is refused before anything else, like a call.
        with pytest.raises(Unauthenticated):
            list(anonymous.resume(stream_id, 1))
        with pytest.raises(Unauthenticated):
            anonymous.cancel_stream(stream_id)
        # Another identity learns nothing: the refusal is the one for a stream that never was.
        with pytest.raises(NotFound) as foreign:
            list(bob.resume(stream_id, 1))
        with pytest.raises(NotFound) as unknown:
            list(bob.resume("0" * 32, 1, function="story"))
        assert foreign.value.message == unknown.value.message.replace("0" * 32, stream_id)
        with pytest.raises(NotFound):
            bob.cancel_stream(stream_id)
        # The owner reads on from where it asked, and may stop it.
        resumed = ada.resume(stream_id, 1)
        assert [next(iter(resumed)) for _ in range(2)] == ["ada:1", "ada:2"]
        resumed.cancel()
        assert ada.cancel_stream(stream_id) is True
