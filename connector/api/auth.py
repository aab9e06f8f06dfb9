"""Bearer-token authentication with two scopes: ``classify`` and ``admin``.

Tokens come from ``api.tokens`` in the configuration.  Every configured token
is compared with :func:`hmac.compare_digest` (constant time, and all tokens are
compared so the position of a match leaks nothing).  An ``admin`` token may
also classify.  Without any configured token the API is open, and
:func:`check_bind_address` makes sure it then listens on loopback only.

:class:`AuthenticationMiddleware` authenticates every request under ``/api/v1`` from its headers, before any
body is read; the :func:`require` dependency of each route then checks the token's scope.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from fastapi import Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from connector.api.errors import ApiError, error_body
from connector.api.settings import ApiToken

log = logging.getLogger(__name__)

TokenScope = Literal["classify", "admin"]

#: what each scope lets a token do (admin includes classify)
_IMPLIED: dict[str, frozenset[str]] = {
    "classify": frozenset({"classify"}),
    "admin": frozenset({"classify", "admin"}),
}


class InsecureBindError(Exception):
    """The API would listen beyond loopback without any token configured."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request: a configured token's name (``anonymous`` without tokens)."""

    name: str
    scopes: frozenset[str]


def _digest(value: str) -> bytes:
    # hashing first makes every comparison the same length, whatever the token lengths
    return hashlib.sha256(value.encode("utf-8")).digest()


class TokenVerifier:
    """Maps a presented bearer token to the principal it belongs to."""

    def __init__(self, tokens: Sequence[ApiToken]) -> None:
        self._tokens = [
            (_digest(t.token.get_secret_value()), Principal(t.name, frozenset().union(*(_IMPLIED[s] for s in t.scopes))))
            for t in tokens
        ]

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def verify(self, presented: str) -> Principal | None:
        candidate = _digest(presented)
        found: Principal | None = None
        for digest, principal in self._tokens:
            if hmac.compare_digest(candidate, digest) and found is None:
                found = principal
        return found


_bearer = HTTPBearer(auto_error=False, description="A token from api.tokens in the configuration")

ANONYMOUS = Principal("anonymous", frozenset({"classify", "admin"}))


#: where the middleware keeps the authenticated principal in the request's state
_PRINCIPAL = "principal"


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def authenticate(verifier: TokenVerifier, authorization: str | None) -> Principal:
    """The principal of an ``Authorization`` header value; ApiError 401 when it carries no valid bearer token."""
    if not verifier.enabled:
        return ANONYMOUS
    scheme, _, presented = (authorization or "").strip().partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise _unauthorized("a bearer token is required")
    principal = verifier.verify(presented)
    if principal is None:
        raise _unauthorized("the token is not valid")
    return principal


class AuthenticationMiddleware:
    """Checks the bearer token of every request under ``prefixes`` before anything reads its body.

    An unauthenticated request is answered 401 from its headers alone (the server discards the unread body),
    so a large body costs an anonymous client nothing on the server.  The principal is kept in the request's
    state; :func:`require` then checks its scope.
    """

    def __init__(self, app: ASGIApp, verifier: TokenVerifier, prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.verifier = verifier
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and self.verifier.enabled and any(
            path == p or path.startswith(p + "/") for p in self.prefixes
        ):
            try:
                principal = authenticate(self.verifier, Headers(scope=scope).get("authorization"))
            except ApiError as exc:
                response = JSONResponse(error_body(exc.code, exc.message), status_code=exc.status, headers=exc.headers)
                await response(scope, receive, send)
                return
            scope.setdefault("state", {})[_PRINCIPAL] = principal
        await self.app(scope, receive, send)


def require(scope: TokenScope) -> Callable[..., Principal]:
    """A FastAPI dependency: the request must carry a token with ``scope``."""

    async def dependency(
        request: Request, _credentials: HTTPAuthorizationCredentials | None = Security(_bearer)
    ) -> Principal:
        verifier: TokenVerifier = request.app.state.verifier
        principal = getattr(request.state, _PRINCIPAL, None)
        if principal is None:  # a route outside the middleware's prefixes
            principal = authenticate(verifier, request.headers.get("authorization"))
            setattr(request.state, _PRINCIPAL, principal)
        if scope not in principal.scopes:
            raise ApiError(403, "forbidden", f"the token lacks the {scope!r} scope")
        return principal

    dependency.__name__ = f"require_{scope}"
    return dependency


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind_address(host: str, tokens: Sequence[ApiToken]) -> None:
    """Refuse a non-loopback address without tokens; log how the API is protected."""
    if tokens:
        log.info("API authentication: %d bearer token(s) configured", len(tokens))
        return
    if not is_loopback(host):
        raise InsecureBindError(
            f"api.host is {host!r} but no api.tokens are configured: without tokens the API serves only on "
            "loopback (127.0.0.1); configure tokens or bind to 127.0.0.1"
        )
    log.warning("API authentication: no api.tokens configured, serving without authentication on loopback %s only", host)
