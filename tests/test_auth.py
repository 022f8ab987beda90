"""JWT validation, login, registration and RBAC."""
from __future__ import annotations

import base64
import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from gateway.app import create_app
from tests.conftest import TENANT_1, TENANT_2, auth, login


def forge(secret: str, **overrides) -> str:
    now = int(time.time())
    claims = {"sub": str(uuid.uuid4()), "tenant_id": TENANT_1, "role": "admin", "iss": "apprun",
              "iat": now, "exp": now + 600}
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, secret, algorithm="HS256")


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.fixture()
def secret(app_config) -> str:
    return app_config["jwt_secret"]


def test_login_returns_token_with_claims(client, secret) -> None:
    response = client.post("/auth/login", json={"email": "bob@test.com", "password": "apprun-test-password"})
    body = response.get_json()
    assert response.status_code == 200 and body["token_type"] == "bearer" and body["expires_in"] > 0
    claims = jwt.decode(body["access_token"], secret, algorithms=["HS256"], issuer="apprun")
    assert (claims["tenant_id"], claims["role"]) == (TENANT_1, "user")


@pytest.mark.parametrize("body", [{"email": "bob@test.com", "password": "wrong-password"},
                                  {"email": "nobody@test.com", "password": "whatever-pass"}])
def test_bad_credentials_are_401(client, body) -> None:
    response = client.post("/auth/login", json=body)
    assert response.status_code == 401 and response.get_json()["code"] == "invalid_credentials"


def test_invalid_tokens_are_401(client, secret) -> None:
    header_none = b64({"alg": "none", "typ": "JWT"})
    payload = b64({"sub": "x", "tenant_id": TENANT_1, "role": "admin", "iss": "apprun",
                   "exp": int(time.time()) + 600, "iat": int(time.time())})
    cases = {
        "missing": None,
        "malformed": "Bearer not.a.jwt",
        "wrong scheme": "Basic abc",
        "expired": "Bearer " + forge(secret, exp=int(time.time()) - 10),
        "wrong signature": "Bearer " + forge("x" * 40),
        "alg none": f"Bearer {header_none}.{payload}.",
        "no tenant": "Bearer " + forge(secret, tenant_id=None),
        "no role": "Bearer " + forge(secret, role=None),
        "no sub": "Bearer " + forge(secret, sub=None),
        "no exp": "Bearer " + forge(secret, exp=None),
        "tenant not uuid": "Bearer " + forge(secret, tenant_id="tenant-1"),
        "wrong issuer": "Bearer " + forge(secret, iss="someone-else"),
    }
    for name, header in cases.items():
        headers = {"Authorization": header} if header else {}
        response = client.get("/data/products", headers=headers)
        assert response.status_code == 401, name
        assert response.get_json()["code"] == "invalid_token", name


def test_rs256_rejects_hs256_signed_with_public_key(app_config, tmp_path) -> None:
    config = dict(app_config, jwt_algorithm="RS256", jwt_private_key_file=str(tmp_path / "key.pem"))
    rs_app = create_app(config)
    client = rs_app.test_client()
    token = login(client, "alice@test.com")
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert client.get("/auth/me", headers=auth(token)).status_code == 200
    jwks = client.get("/.well-known/jwks.json").get_json()
    assert jwks["keys"][0]["kty"] == "RSA" and jwks["keys"][0]["alg"] == "RS256"
    public_pem = serialization.load_pem_private_key((tmp_path / "key.pem").read_bytes(), None).public_key() \
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    claims = jwt.decode(token, options={"verify_signature": False})
    # pyjwt refuses to sign HMAC with a PEM key, so build the confusion token by hand.
    import hashlib
    import hmac
    header = b64({"alg": "HS256", "typ": "JWT"})
    body = b64(claims)
    signature = base64.urlsafe_b64encode(
        hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
    forged = f"{header}.{body}.{signature}"
    response = client.get("/auth/me", headers=auth(forged))
    assert response.status_code == 401


def test_rbac_user_reads_but_cannot_write(client, tokens) -> None:
    bob = tokens["bob"]
    assert client.get("/data/products", headers=auth(bob)).status_code == 200
    for method, url in (("post", "/data/products"), ("patch", "/data/products?id=eq.x"),
                        ("delete", "/data/products?id=eq.x"), ("put", "/functions/anything"),
                        ("delete", "/functions/anything"), ("post", "/api/v1/workflows/execute"),
                        ("post", "/auth/register")):
        response = getattr(client, method)(url, json={"name": "x", "price": 1}, headers=auth(bob))
        assert response.status_code == 403, (method, url)
        assert response.get_json()["code"] == "forbidden"


def test_unknown_role_is_denied(client, secret) -> None:
    token = forge(secret, role="superhero")
    assert client.get("/data/products", headers=auth(token)).status_code == 403
    assert client.get("/auth/me", headers=auth(token)).status_code == 403


def test_register_in_own_tenant_only(client, tokens) -> None:
    email = f"new-{uuid.uuid4().hex[:8]}@test.com"
    created = client.post("/auth/register", json={"email": email, "password": "long-enough-1", "role": "user"},
                          headers=auth(tokens["charlie"]))
    assert created.status_code == 201 and created.get_json()["tenant_id"] == TENANT_2
    token = login(client, email, "long-enough-1")
    assert client.get("/auth/me", headers=auth(token)).get_json()["tenant_id"] == TENANT_2
    again = client.post("/auth/register", json={"email": email.upper(), "password": "long-enough-1"},
                        headers=auth(tokens["charlie"]))
    assert again.status_code == 409
    cross = client.post("/auth/register", json={"email": "x" + email, "password": "long-enough-1",
                                                "tenant_id": TENANT_1}, headers=auth(tokens["charlie"]))
    assert cross.status_code == 403
    for body in ({"email": "bad", "password": "long-enough-1"}, {"email": "a@b.co", "password": "short"},
                 {"email": "a@b.co", "password": "long-enough-1", "role": "root"}):
        assert client.post("/auth/register", json=body, headers=auth(tokens["charlie"])).status_code == 400
