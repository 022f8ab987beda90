"""Identity routes: login, register (tenant admins only), me, JWKS.

Registration rule: an authenticated admin creates users in *its own*
tenant only; the tenant comes from the admin's token, never from the body.
Roles are 'admin' or 'user'.
"""
from __future__ import annotations

import re

from flask import Blueprint, Response, current_app, jsonify, request

from gateway.auth.identity import current_claims
from gateway.auth.passwords import PasswordService
from gateway.auth.throttle import LoginThrottle, ThrottlePolicy
from gateway.auth.tokens import TokenService
from gateway.bodies import json_body, string_field
from gateway.db import plain_cursor, tenant_transaction
from gateway.errors import ApiError
from gateway.rbac.enforcer import authorize
from gateway.settings import Settings

bp = Blueprint("auth", __name__)

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
ROLES = ("admin", "user")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024


def _token_response(user_id: str, tenant_id: str, role: str, email: str, status: int = 200) -> Response:
    tokens: TokenService = current_app.extensions["apprun.tokens"]
    response = jsonify(
        access_token=tokens.issue(user_id, tenant_id, role, email), token_type="bearer", expires_in=tokens.ttl_s
    )
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/auth/login")
def login() -> Response:
    body = json_body()
    email = string_field(body, "email")
    password = string_field(body, "password", max_length=MAX_PASSWORD_LENGTH)
    throttle: LoginThrottle = current_app.extensions["apprun.login_throttle"]
    # The client address is the TCP peer: X-Forwarded-For is not trusted.
    with throttle.attempt(email, request.remote_addr or "") as attempt:
        with plain_cursor() as cur:
            cur.execute("SELECT id, tenant_id, email, role, password_hash FROM auth_lookup_user(%s)", (email,))
            row = cur.fetchone()
        passwords: PasswordService = current_app.extensions["apprun.passwords"]
        if not passwords.verify(row[4] if row else None, password):
            attempt.failed()
            raise ApiError(401, "invalid_credentials", "invalid email or password")
        attempt.succeeded()
    user_id, tenant_id, email, role, _ = row
    return _token_response(str(user_id), str(tenant_id), role, email)


@bp.post("/auth/register")
@authorize
def register() -> Response:
    claims = current_claims()
    body = json_body()
    email = string_field(body, "email").strip()
    password = string_field(body, "password", max_length=MAX_PASSWORD_LENGTH)
    role = body.get("role", "user")
    if not EMAIL_RE.match(email):
        raise ApiError(400, "invalid_input", "'email' is not a valid e-mail address")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ApiError(400, "invalid_input", f"'password' must have at least {MIN_PASSWORD_LENGTH} characters")
    if role not in ROLES:
        raise ApiError(400, "invalid_input", f"'role' must be one of {list(ROLES)}")
    if "tenant_id" in body and body["tenant_id"] != claims["tenant_id"]:
        raise ApiError(403, "forbidden", "admins register users in their own tenant only")
    passwords: PasswordService = current_app.extensions["apprun.passwords"]
    password_hash = passwords.hash(password)
    with tenant_transaction(claims) as cur:
        cur.execute(
            "INSERT INTO users (tenant_id, email, password_hash, role) VALUES (%s, %s, %s, %s) RETURNING id",
            (claims["tenant_id"], email, password_hash, role),
        )
        user_id = cur.fetchone()[0]
    response = jsonify(id=str(user_id), email=email, role=role, tenant_id=claims["tenant_id"])
    response.status_code = 201
    return response


@bp.get("/auth/me")
@authorize
def me() -> Response:
    claims = current_claims()
    return jsonify({k: claims.get(k) for k in ("sub", "tenant_id", "role", "email", "exp")})


@bp.get("/.well-known/jwks.json")
def jwks() -> Response:
    tokens: TokenService = current_app.extensions["apprun.tokens"]
    return jsonify(tokens.jwks())


def init_app(app) -> None:
    settings = app.config["APPRUN_SETTINGS"]
    app.extensions["apprun.tokens"] = TokenService(settings)
    app.extensions["apprun.passwords"] = PasswordService(
        settings.password_hash_time_cost, settings.password_hash_memory_kib, settings.password_hash_threads
    )
    app.extensions["apprun.login_throttle"] = login_throttle(settings)
    app.register_blueprint(bp)


def login_throttle(settings: Settings) -> LoginThrottle:
    def policy(free_failures: int) -> ThrottlePolicy:
        return ThrottlePolicy(free_failures, settings.login_delay_base_s, settings.login_delay_max_s,
                              settings.login_failure_window_s, settings.login_concurrent_attempts)

    return LoginThrottle(policy(settings.login_account_free_failures), policy(settings.login_address_free_failures))
