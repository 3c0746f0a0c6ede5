"""Bearer tokens for the admin API: HS256 JWTs (PyJWT) signed with the agent's
`[admin].jwt_secret_file`, carrying `scope` "read" (GET) or "admin" (every request; it
includes read) and an expiry. `/healthz` and `/metrics` stay open. Without a secret —
allowed only on a loopback listener (agent/config.py) — nothing is checked."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

SCOPES = ("read", "admin")
ALGORITHM = "HS256"
Endpoint = Callable[[Request], Awaitable[Response]]


def issue_token(secret: bytes, scope: str, ttl_seconds: int, subject: str = "operator") -> str:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    now = int(time.time())
    return jwt.encode({"sub": subject, "scope": scope, "iat": now, "exp": now + ttl_seconds},
                      secret, algorithm=ALGORITHM)


class TokenAuth:
    def __init__(self, secret: bytes | None) -> None:
        self.secret = secret
        self.refused = 0  # requests refused, for status and metrics

    def guard(self, endpoint: Endpoint) -> Endpoint:
        """ENDPOINT behind a token check: GET and HEAD need "read", anything else "admin"."""
        if self.secret is None:
            return endpoint

        async def guarded(request: Request) -> Response:
            needed = "read" if request.method in ("GET", "HEAD") else "admin"
            refusal = self._refusal(request, needed)
            if refusal is not None:
                self.refused += 1
                return refusal
            return await endpoint(request)

        return guarded

    def _refusal(self, request: Request, needed: str) -> JSONResponse | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _error(401, "a bearer token is required (Authorization: Bearer …)")
        assert self.secret is not None
        try:
            claims = jwt.decode(token, self.secret, algorithms=[ALGORITHM],
                                options={"require": ["exp", "scope"]})
        except jwt.ExpiredSignatureError:
            return _error(401, "the token has expired")
        except jwt.InvalidTokenError as exc:
            return _error(401, f"the token is not valid: {exc}")
        scope = claims.get("scope")
        if scope not in SCOPES or (needed == "admin" and scope != "admin"):
            return _error(403, f"the token's scope {scope!r} does not allow this; "
                               f"{needed!r} is needed")
        return None


def _error(status: int, text: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": text}, status_code=status, headers=headers)
