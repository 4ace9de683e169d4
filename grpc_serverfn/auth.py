"""Authentication and access rules: bearer tokens and required roles as ready middleware, and
the identity a verified client certificate gives.

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

On a server that requires client certificates (``ServerTLS(..., client_ca=...)``, mutual TLS),
``ctx.identity`` is the certificate's identity (``certificate_identity``) unless a middleware set
one: with ``bearer_auth`` too, the token's identity wins for the calls it checks.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import PermissionDenied, Unauthenticated
from .middleware import Call, CallNext, Middleware

__all__ = ["Identity", "TokenVerifier", "bearer_auth", "certificate_identity"]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: a subject (user or service id), its roles, and any other claims."""

    subject: str
    roles: frozenset[str] = frozenset()
    claims: Mapping[str, Any] = field(default_factory=dict)


def certificate_identity(auth_context: Mapping[str, Iterable[bytes]]) -> Identity | None:
    """The Identity of the client certificate in a call's grpc ``auth_context()``: the subject
    distinguished name (RFC 2253, e.g. ``CN=billing,O=Example``), with ``common_name``,
    ``subject_alternative_names`` and ``certificate_pem`` in the claims; None without one.

    Trust it only from a server that verifies client certificates (requires mutual TLS).
    """
    subject = _first(auth_context, "x509_subject")
    common_name = _first(auth_context, "x509_common_name")
    if subject is None and common_name is None:
        return None
    return Identity(
        subject=subject if subject is not None else f"CN={common_name}",
        claims={
            "common_name": common_name,
            "subject_alternative_names": [
                _text(name) for name in auth_context.get("x509_subject_alternative_name", ())
            ],
            "certificate_pem": _first(auth_context, "x509_pem_cert"),
        },
    )


def _first(auth_context: Mapping[str, Iterable[bytes]], key: str) -> str | None:
    value = next(iter(auth_context.get(key, ())), None)
    return _text(value) if value is not None else None


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


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
