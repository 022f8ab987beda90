"""JWT issue and strict verification with pyjwt.

* One algorithm is accepted: the configured one (HS256 by default, RS256
  or EdDSA optional).  ``alg: none`` or an HS256 token signed with the
  public key of an RS256 setup are therefore refused.
* ``exp``, ``iat``, ``sub``, ``tenant_id`` and ``role`` are required.
* Verified tokens are cached until they expire, so the signature check is
  paid once per token and not once per request.
"""
from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from gateway.errors import ApiError
from gateway.settings import Settings

REQUIRED_CLAIMS = ("exp", "iat", "sub", "tenant_id", "role")
RSA_KEY_BITS = 2048
PRIVATE_KEY_MODE = 0o600


class TokenError(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(401, "invalid_token", message, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class TokenService:
    def __init__(self, settings: Settings) -> None:
        self.algorithm = settings.jwt_algorithm
        self.issuer = settings.jwt_issuer
        self.ttl_s = settings.jwt_ttl_s
        self.leeway_s = settings.jwt_leeway_s
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._cache_size = settings.jwt_cache_size
        self._cache_lock = threading.Lock()
        if self.algorithm == "HS256":
            if not settings.jwt_secret:
                raise ValueError("APPRUN_JWT_SECRET is required for HS256")
            self._signing_key: Any = settings.jwt_secret.encode()
            self._verifying_key: Any = self._signing_key
            self.key_id = None
        else:
            private_key = _load_or_create_private_key(settings.jwt_private_key_file, self.algorithm)
            self._signing_key = private_key
            self._verifying_key = private_key.public_key()
            public_der = self._verifying_key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            self.key_id = hashlib.sha256(public_der).hexdigest()[:16]

    # -- issuing -----------------------------------------------------------
    def issue(self, user_id: str, tenant_id: str, role: str, email: str) -> str:
        now = int(time.time())
        claims = {
            "sub": user_id,
            "tenant_id": tenant_id,
            "role": role,
            "email": email,
            "iss": self.issuer,
            "iat": now,
            "exp": now + self.ttl_s,
            "jti": uuid.uuid4().hex,
        }
        headers = {"kid": self.key_id} if self.key_id else None
        return jwt.encode(claims, self._signing_key, algorithm=self.algorithm, headers=headers)

    # -- verifying ---------------------------------------------------------
    def verify(self, token: str) -> dict[str, Any]:
        now = time.time()
        with self._cache_lock:
            cached = self._cache.get(token)
        if cached is not None and cached["exp"] + self.leeway_s > now:
            return cached
        claims = self._decode(token)
        with self._cache_lock:
            self._cache[token] = claims
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return claims

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            claims = jwt.decode(
                token,
                self._verifying_key,
                algorithms=[self.algorithm],
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": list(REQUIRED_CLAIMS) + ["iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token has expired") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(f"token is missing the '{exc.claim}' claim") from None
        except jwt.InvalidAlgorithmError:
            raise TokenError(f"token algorithm is not allowed (expected {self.algorithm})") from None
        except jwt.InvalidSignatureError:
            raise TokenError("token signature is invalid") from None
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"token is invalid: {exc}") from None
        for claim in ("sub", "tenant_id", "role"):
            if not isinstance(claims.get(claim), str) or not claims[claim]:
                raise TokenError(f"claim '{claim}' must be a non-empty string")
        try:
            uuid.UUID(claims["tenant_id"])
        except ValueError:
            raise TokenError("claim 'tenant_id' must be a UUID") from None
        return claims

    # -- JWKS ----------------------------------------------------------------
    def jwks(self) -> dict[str, Any]:
        if self.algorithm == "HS256":
            return {"keys": []}  # symmetric keys are never published
        if isinstance(self._verifying_key, rsa.RSAPublicKey):
            numbers = self._verifying_key.public_numbers()
            key = {"kty": "RSA", "n": _b64_int(numbers.n), "e": _b64_int(numbers.e)}
        else:
            raw = self._verifying_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            key = {"kty": "OKP", "crv": "Ed25519", "x": _b64(raw)}
        key.update({"alg": self.algorithm, "use": "sig", "kid": self.key_id})
        return {"keys": [key]}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64_int(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _load_or_create_private_key(path: str, algorithm: str) -> Any:
    """Load the PEM private key; when the file does not exist yet, create
    one so a dev setup works with no manual key generation.  The file is
    kept 0600 (an existing one readable by others is tightened): whoever
    reads it can sign tokens for any tenant."""
    if not path:
        raise ValueError(f"APPRUN_JWT_PRIVATE_KEY_FILE is required for {algorithm}")
    key_path = Path(path)
    if key_path.exists():
        if key_path.stat().st_mode & 0o077:
            key_path.chmod(PRIVATE_KEY_MODE)
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        expected = rsa.RSAPrivateKey if algorithm == "RS256" else ed25519.Ed25519PrivateKey
        if not isinstance(key, expected):
            raise ValueError(f"{path} does not hold a key for {algorithm}")
        return key
    key = (rsa.generate_private_key(65537, RSA_KEY_BITS) if algorithm == "RS256"
           else ed25519.Ed25519PrivateKey.generate())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_KEY_MODE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return key
