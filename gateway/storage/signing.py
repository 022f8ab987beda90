"""Signed URLs: a short JWT (HMAC-SHA256) that binds purpose, tenant,
bucket, object path and expiry.  The key is derived from the gateway's
secret with a purpose label, so a signed-URL token is never a valid access
token and the other way round.  Verification compares the bucket and path
of the URL with those in the token: an edited URL is refused."""
from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from gateway.storage.errors import StorageError

ALGORITHM = "HS256"
KEY_LABEL = b"apprun storage signed urls v1"
DOWNLOAD = "download"
UPLOAD = "upload"


@dataclass(frozen=True)
class Grant:
    tenant_id: str
    owner: str
    upsert: bool


def derive_key(settings: Any) -> bytes:
    """The storage secret if set, else an HMAC of the JWT secret (or of the
    private key file for RS256/EdDSA), so every gateway process agrees."""
    if settings.storage_signing_secret:
        material = settings.storage_signing_secret.encode()
    elif settings.jwt_secret:
        material = settings.jwt_secret.encode()
    elif settings.jwt_private_key_file and Path(settings.jwt_private_key_file).exists():
        material = Path(settings.jwt_private_key_file).read_bytes()
    else:
        raise ValueError("signed URLs need APPRUN_STORAGE_SIGNING_SECRET or a JWT secret/key")
    return hmac.new(material, KEY_LABEL, hashlib.sha256).digest()


class UrlSigner:
    def __init__(self, key: bytes, max_expiry_s: int) -> None:
        self._key = key
        self.max_expiry_s = max_expiry_s

    def sign(self, purpose: str, tenant_id: str, bucket_id: str, name: str, expires_in_s: int,
             owner: str = "", upsert: bool = False) -> str:
        now = int(time.time())
        claims = {"purpose": purpose, "tenant_id": tenant_id, "bucket": bucket_id, "path": name,
                  "iat": now, "exp": now + expires_in_s}
        if purpose == UPLOAD:
            claims.update(owner=owner, upsert=upsert)
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def verify(self, token: str | None, purpose: str, bucket_id: str, name: str) -> Grant:
        if not token:
            raise StorageError(400, "invalid_signature", "the signed URL has no token")
        try:
            claims = jwt.decode(token, self._key, algorithms=[ALGORITHM],
                                options={"require": ["exp", "purpose", "tenant_id", "bucket", "path"]})
        except jwt.ExpiredSignatureError:
            raise StorageError(400, "invalid_signature", "the signed URL has expired") from None
        except jwt.InvalidTokenError:
            raise StorageError(400, "invalid_signature", "the signed URL's token is invalid") from None
        if claims["purpose"] != purpose or claims["bucket"] != bucket_id or claims["path"] != name:
            raise StorageError(400, "invalid_signature", "the token was not signed for this URL")
        return Grant(str(claims["tenant_id"]), str(claims.get("owner", "")), bool(claims.get("upsert", False)))

    def expiry(self, value: Any) -> int:
        """``expiresIn`` as storage3 sends it (a string) or a number."""
        try:
            seconds = int(str(value))
        except ValueError:
            raise StorageError(400, "invalid_expiry", "'expiresIn' must be a whole number of seconds") from None
        if not 1 <= seconds <= self.max_expiry_s:
            raise StorageError(400, "invalid_expiry", f"'expiresIn' must be between 1 and {self.max_expiry_s}")
        return seconds
