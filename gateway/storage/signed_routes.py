"""Signed URLs: create them (download: users and admins; upload: admins)
and serve them without a JWT, the token being the grant."""
from __future__ import annotations

from urllib.parse import quote

from flask import Response, jsonify, request

from gateway.auth.identity import current_claims
from gateway.bodies import json_body
from gateway.db import tenant_transaction
from gateway.storage import catalog
from gateway.storage.errors import StorageError, bucket_not_found
from gateway.storage.object_routes import find_object, object_response, store_upload
from gateway.storage.service import (
    MAX_PATHS_PER_REQUEST,
    bp,
    duplicate,
    object_name,
    storage_authorize,
    storage_service,
    upsert_header,
)
from gateway.storage.signing import DOWNLOAD, UPLOAD

SIGNED_UPLOAD_EXPIRES_S = 2 * 3600


# -- signed URLs ----------------------------------------------------------------
def _signed_path(kind: str, bucket_id: str, name: str, token: str) -> str:
    return f"/object/{kind}/{quote(bucket_id)}/{quote(name, safe='/')}?token={token}"


@bp.post("/object/sign/<bucket_id>/<objectpath:name>")
@storage_authorize
def sign_download(bucket_id: str, name: str) -> Response:
    service = storage_service()
    expires_in = service.signer.expiry(json_body().get("expiresIn"))
    claims = current_claims()
    obj = find_object(claims, bucket_id, object_name(name))
    token = service.signer.sign(DOWNLOAD, claims["tenant_id"], bucket_id, obj.name, expires_in)
    return jsonify(signedURL=_signed_path("sign", bucket_id, obj.name, token))


@bp.post("/object/sign/<bucket_id>")
@storage_authorize
def sign_downloads(bucket_id: str) -> Response:
    service = storage_service()
    body = json_body()
    expires_in = service.signer.expiry(body.get("expiresIn"))
    paths = body.get("paths")
    if not isinstance(paths, list) or not 1 <= len(paths) <= MAX_PATHS_PER_REQUEST:
        raise StorageError(400, "invalid_request", f"'paths' must list 1 to {MAX_PATHS_PER_REQUEST} object paths")
    names = [object_name(path) for path in paths]
    claims = current_claims()
    with tenant_transaction(claims) as cur:
        if not catalog.bucket_exists(cur, bucket_id):
            raise bucket_not_found(bucket_id)
        existing = catalog.existing_names(cur, bucket_id, names)
    results = []
    for name in names:
        if name in existing:
            token = service.signer.sign(DOWNLOAD, claims["tenant_id"], bucket_id, name, expires_in)
            results.append({"error": None, "path": name, "signedURL": _signed_path("sign", bucket_id, name, token)})
        else:
            results.append({"error": "Either the object does not exist or you do not have access to it",
                            "path": name, "signedURL": None})
    return jsonify(results)


@bp.get("/object/sign/<bucket_id>/<objectpath:name>")
def signed_download(bucket_id: str, name: str) -> Response:
    """No JWT: the token is the grant (tenant, bucket, path, expiry)."""
    grant = storage_service().signer.verify(request.args.get("token"), DOWNLOAD, bucket_id, name)
    claims = {"tenant_id": grant.tenant_id, "role": "signed_url", "sub": ""}
    return object_response(find_object(claims, bucket_id, name))


@bp.post("/object/upload/sign/<bucket_id>/<objectpath:name>")
@storage_authorize
def sign_upload(bucket_id: str, name: str) -> Response:
    service = storage_service()
    claims = current_claims()
    name = object_name(name)
    upsert = upsert_header()
    with tenant_transaction(claims, single_statement=True) as cur:
        target = catalog.upload_target(cur, bucket_id, name)
    if target.existing_size is not None and not upsert:
        raise duplicate(f"'{name}' exists in '{bucket_id}'")
    token = service.signer.sign(UPLOAD, claims["tenant_id"], bucket_id, name, SIGNED_UPLOAD_EXPIRES_S,
                                owner=claims["sub"], upsert=upsert)
    return jsonify(url=_signed_path("upload/sign", bucket_id, name, token), token=token)


@bp.put("/object/upload/sign/<bucket_id>/<objectpath:name>")
def signed_upload(bucket_id: str, name: str) -> Response:
    """No JWT: the token says which tenant, bucket and path may be written."""
    grant = storage_service().signer.verify(request.args.get("token"), UPLOAD, bucket_id, name)
    claims = {"tenant_id": grant.tenant_id, "role": "signed_url", "sub": grant.owner}
    return store_upload(claims, bucket_id, name, upsert=grant.upsert)


