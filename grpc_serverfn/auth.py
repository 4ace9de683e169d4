"""Authentication and access rules as ready middleware: bearer tokens, required roles.

::

    def verify(token: str) -> Identity | None:          # or an async def
        return TOKENS.get(token)                         # your token check: JWT, a lookup, ...

    fns = Registry(middleware=[bearer_auth(verify, public={"health_probe"})])

    @fns.server_fn(require_roles={"admin"})
    async def purge(ctx: Context) -> str:
        return f"purged by {ctx.identity.subject}"

A call without ``authorization: Bearer <token>`` metadata, or with a token ``verify`` rejects
(returns None), is ``UNAUTHENTICATED``; a caller missing a role the function requires is
``PERMISSION_DENIED``. The handler finds who called in ``ctx.identity``.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import PermissionDenied, Unauthenticated
from .middleware import Call, CallNext, Middleware

__all__ = ["Identity", "TokenVerifier", "bearer_auth"]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: a subject (user or service id), its roles, and any other claims."""

    subject: str
    roles: frozenset[str] = frozenset()
    claims: Mapping[str, Any] = field(default_factory=dict)


TokenVerifier = Callable[[str], "Identity | Awaitable[Identity | None] | None"]
"""Turns a bearer token into an Identity, or None when the token is not valid."""

_SCHEME = "bearer "


def bearer_auth(verify: TokenVerifier, *, public: Collection[str] = ()) -> Middleware:
    """Middleware requiring a valid bearer token on every call but those named in ``public``,
    and the roles a function declares with ``require_roles``."""
    public_names = frozenset(public)

    async def authenticate(call: Call, call_next: CallNext) -> AsyncIterator[Any]:
        function = call.function
        if function.name not in public_names or function.required_roles:
            identity = await _identify(call, verify)
            missing = function.required_roles - identity.roles
            if missing:
                raise PermissionDenied(
                    f"{function.name!r} requires the role(s) {', '.join(sorted(missing))}"
                )
            call.ctx.identity = identity
        async for chunk in call_next(call):
            yield chunk

    return authenticate


async def _identify(call: Call, verify: TokenVerifier) -> Identity:
    header = call.ctx.metadata.get("authorization")
    if not isinstance(header, str) or not header.lower().startswith(_SCHEME):
        raise Unauthenticated("missing 'authorization: Bearer <token>' metadata")
    result = verify(header[len(_SCHEME) :].strip())
    identity = await result if inspect.isawaitable(result) else result
    if not isinstance(identity, Identity):
        raise Unauthenticated("the bearer token is not valid")
    return identity
