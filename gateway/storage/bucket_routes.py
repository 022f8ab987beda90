"""Bucket routes: list, create, get, update, empty, delete."""
from __future__ import annotations

from typing import Any

from flask import Response, jsonify

from gateway.auth.identity import current_claims
from gateway.bodies import json_body
from gateway.db import tenant_transaction
from gateway.storage import catalog, limits
from gateway.storage.errors import StorageError, bucket_not_found
from gateway.storage.names import check_bucket_id
from gateway.storage.service import bp, discard, duplicate, message, storage_authorize


# -- buckets ----------------------------------------------------------------
def _bucket_options(body: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if "public" in body:
        if not isinstance(body["public"], bool):
            raise StorageError(400, "invalid_bucket_options", "'public' must be true or false")
        options["public"] = body["public"]
    if "file_size_limit" in body:
        options["file_size_limit"] = limits.parse_size_limit(body["file_size_limit"])
    if "allowed_mime_types" in body:
        options["allowed_mime_types"] = limits.parse_mime_types(body["allowed_mime_types"])
    return options


@bp.get("/bucket")
@storage_authorize
def list_buckets() -> Response:
    with tenant_transaction(current_claims(), single_statement=True) as cur:
        return jsonify(catalog.list_buckets(cur))


@bp.post("/bucket")
@storage_authorize
def create_bucket() -> Response:
    body = json_body()
    bucket_id = check_bucket_id(body.get("id", body.get("name")))
    name = body.get("name") or bucket_id
    if not isinstance(name, str) or len(name) > 100:
        raise StorageError(400, "invalid_bucket_name", "'name' must be a string of at most 100 characters")
    claims = current_claims()
    with tenant_transaction(claims, single_statement=True) as cur:
        created = catalog.create_bucket(cur, bucket_id, name, claims["sub"], _bucket_options(body))
    if not created:
        raise duplicate(f"bucket '{bucket_id}'")
    return jsonify(name=bucket_id)


@bp.get("/bucket/<bucket_id>")
@storage_authorize
def get_bucket(bucket_id: str) -> Response:
    with tenant_transaction(current_claims(), single_statement=True) as cur:
        return jsonify(catalog.get_bucket(cur, bucket_id))


@bp.put("/bucket/<bucket_id>")
@storage_authorize
def update_bucket(bucket_id: str) -> Response:
    options = _bucket_options(json_body())
    with tenant_transaction(current_claims(), single_statement=True) as cur:
        if not catalog.update_bucket(cur, bucket_id, options):
            raise bucket_not_found(bucket_id)
    return message("Successfully updated")


@bp.post("/bucket/<bucket_id>/empty")
@storage_authorize
def empty_bucket(bucket_id: str) -> Response:
    with tenant_transaction(current_claims()) as cur:
        if not catalog.bucket_exists(cur, bucket_id):
            raise bucket_not_found(bucket_id)
        removed = catalog.delete_objects(cur, bucket_id, None)
    discard([obj.storage_key for obj in removed])
    return message("Successfully emptied")


@bp.delete("/bucket/<bucket_id>")
@storage_authorize
def delete_bucket(bucket_id: str) -> Response:
    with tenant_transaction(current_claims(), single_statement=True) as cur:
        if not catalog.delete_bucket(cur, bucket_id):
            raise bucket_not_found(bucket_id)
    return message("Successfully deleted")


