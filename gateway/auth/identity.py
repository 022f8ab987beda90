"""The caller's identity for the current request, from its bearer token."""
from __future__ import annotations

from typing import Any

from flask import current_app, g, request

from gateway.auth.tokens import TokenError, TokenService


def current_claims() -> dict[str, Any]:
    """Verified claims of the request's bearer token; 401 when absent or bad."""
    claims = g.get("apprun_claims")
    if claims is not None:
        return claims
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise TokenError("missing bearer token (Authorization: Bearer <jwt>)")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError("Authorization header must be 'Bearer <jwt>'")
    tokens: TokenService = current_app.extensions["apprun.tokens"]
    claims = tokens.verify(token.strip())
    g.apprun_claims = claims
    return claims
