"""Bearer-token authentication and per-function roles, with allowed and refused callers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from grpc_serverfn import (
    Client,
    Context,
    Identity,
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
