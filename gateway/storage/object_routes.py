"""Object routes: upload (raw or multipart, POST or upsert), download (Range,
If-None-Match), info, list, move, copy, remove."""
from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from flask import Response, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.http import http_date

from gateway.auth.identity import current_claims
from gateway.bodies import json_body
from gateway.db import tenant_transaction
from gateway.errors import ApiError
from gateway.storage import catalog, limits
from gateway.storage.backends import new_key
from gateway.storage.errors import StorageError, bucket_not_found, object_not_found
from gateway.storage.names import folder_prefix
from gateway.storage.service import (
    MAX_PATHS_PER_REQUEST,
    backend_failure,
    bp,
    discard,
    duplicate,
    message,
    object_name,
    storage_authorize,
    storage_service,
    upsert_header,
)
from gateway.storage.uploads import MULTIPART_SLACK_BYTES, UploadBody, payload_too_large

log = logging.getLogger(__name__)

MAX_LIST_LIMIT = 1000


# -- uploads ------------------------------------------------------------------
def _cache_control(value: str) -> str | None:
    value = value.strip()
    return f"max-age={value}" if value.isdigit() else (value or None)


def store_upload(claims: dict[str, Any], bucket_id: str, name: str, upsert: bool) -> Response:
    """Bytes first (temporary file, fsync, rename), then the metadata row in
    its own transaction, which also re-checks the quota.  A failure at any
    point deletes the new bytes, so nothing half-done becomes visible."""
    service = storage_service()
    settings = service.settings
    name = object_name(name)
    with tenant_transaction(claims, single_statement=True) as cur:
        target = catalog.upload_target(cur, bucket_id, name)
    if target.existing_size is not None and not upsert:
        raise duplicate(f"'{name}' exists in '{bucket_id}'")
    limit = settings.storage_max_object_bytes
    if target.file_size_limit is not None:
        limit = min(limit, target.file_size_limit)
    multipart = request.mimetype == "multipart/form-data"
    declared = request.content_length
    if declared is not None and declared > limit + (MULTIPART_SLACK_BYTES if multipart else 0):
        raise payload_too_large(limit)
    # Refuse early what cannot fit; the transaction below is the real check.
    replaced = target.existing_size or 0
    limits.check_quota(limits.quota_for(settings, target.plan), target.plan,
                       target.used_bytes - replaced + (0 if multipart or declared is None else declared),
                       target.used_objects + (0 if target.existing_size is not None else 1))
    request.max_content_length = limit + MULTIPART_SLACK_BYTES
    body = UploadBody(request, limit)
    body.start()
    limits.check_mimetype(body.mimetype, target.allowed_mime_types)
    key = new_key(claims["tenant_id"])
    try:
        service.backend.write(key, body.chunks())
    except (ApiError, HTTPException):   # the caller's body (413, 400), not the backend
        raise
    except Exception as exc:  # noqa: BLE001
        raise backend_failure(exc) from None
    values = {"bucket_id": bucket_id, "name": name, "storage_key": key, "size": body.size,
              "mimetype": body.mimetype, "cache_control": _cache_control(body.cache_control), "etag": body.etag,
              "user_metadata": body.user_metadata, "owner": claims.get("sub", "")}
    object_id, _ = commit_object(claims, values, upsert)
    return jsonify(Id=object_id, Key=f"{bucket_id}/{name}")


def commit_object(claims: dict[str, Any], values: dict[str, Any], upsert: bool) -> tuple[str, str | None]:
    """Insert the row for bytes already stored under values['storage_key'];
    on any failure those bytes are deleted, after success the replaced ones."""
    settings = storage_service().settings
    try:
        with tenant_transaction(claims) as cur:
            object_id, replaced_key = catalog.insert_object(cur, values, upsert)
            if object_id is None:
                raise duplicate(f"'{values['name']}' exists in '{values['bucket_id']}'")
            used_bytes, used_objects, plan = catalog.usage(cur)
            limits.check_quota(limits.quota_for(settings, plan), plan, used_bytes, used_objects)
    except BaseException:
        discard([values["storage_key"]])
        raise
    if replaced_key:
        discard([replaced_key])
    return object_id, replaced_key


@bp.post("/object/<bucket_id>/<objectpath:name>")
@storage_authorize
def upload_object(bucket_id: str, name: str) -> Response:
    return store_upload(current_claims(), bucket_id, name, upsert=upsert_header())


@bp.put("/object/<bucket_id>/<objectpath:name>")
@storage_authorize
def upsert_object(bucket_id: str, name: str) -> Response:
    return store_upload(current_claims(), bucket_id, name, upsert=True)


# -- downloads ----------------------------------------------------------------
def _content_disposition(filename: str) -> str:
    try:
        filename.encode("ascii")
        return f'attachment; filename="{filename.replace(chr(34), "")}"'
    except UnicodeEncodeError:
        return f"attachment; filename*=UTF-8''{quote(filename)}"


def object_response(obj: catalog.StoredObject) -> Response:
    headers = {"Content-Type": obj.mimetype, "ETag": obj.etag, "Cache-Control": obj.cache_control or "no-cache",
               "Last-Modified": http_date(obj.updated_at), "Accept-Ranges": "bytes"}
    if request.if_none_match.contains(obj.etag.strip('"')):
        return Response(status=304, headers=headers)
    start, stop, status = 0, obj.size, 200
    ranges = request.range
    if ranges is not None and ranges.units == "bytes" and len(ranges.ranges) == 1:
        bounds = ranges.range_for_length(obj.size)
        if bounds is None:
            raise StorageError(416, "range_not_satisfiable", f"the range is outside the object ({obj.size} bytes)",
                               headers={"Content-Range": f"bytes */{obj.size}"})
        start, stop = bounds
        status = 206
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{obj.size}"
    if "download" in request.args:
        headers["Content-Disposition"] = _content_disposition(request.args["download"] or obj.name.rsplit("/", 1)[-1])
    headers["Content-Length"] = str(stop - start)
    if request.method == "HEAD":
        return Response(status=status, headers=headers)
    try:
        chunks = storage_service().backend.read(obj.storage_key, start, stop)
    except Exception as exc:  # noqa: BLE001 - metadata says it exists
        raise backend_failure(exc) from None
    return Response(chunks, status=status, headers=headers, direct_passthrough=True)


def find_object(claims: dict[str, Any], bucket_id: str, name: str) -> catalog.StoredObject:
    with tenant_transaction(claims, single_statement=True) as cur:
        obj = catalog.get_object(cur, bucket_id, name)
    if obj is None:
        raise object_not_found()
    return obj


@bp.get("/object/<bucket_id>/<objectpath:name>")
@bp.get("/object/authenticated/<bucket_id>/<objectpath:name>")
@storage_authorize
def download_object(bucket_id: str, name: str) -> Response:
    return object_response(find_object(current_claims(), bucket_id, object_name(name)))


@bp.get("/object/info/<bucket_id>/<objectpath:name>")
@storage_authorize
def object_info(bucket_id: str, name: str) -> Response:
    return jsonify(find_object(current_claims(), bucket_id, object_name(name)).info_json())


@bp.post("/object/list/<bucket_id>")
@storage_authorize
def list_objects(bucket_id: str) -> Response:
    body = json_body()
    settings = storage_service().settings
    prefix = folder_prefix(body.get("prefix"), settings.storage_max_path_bytes)
    limit, offset = body.get("limit", 100), body.get("offset", 0)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise StorageError(400, "invalid_list_options", f"'limit' must be an integer from 1 to {MAX_LIST_LIMIT}")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise StorageError(400, "invalid_list_options", "'offset' must be a non-negative integer")
    sort_by = body.get("sortBy") or {}
    column = sort_by.get("column", "name") if isinstance(sort_by, dict) else None
    order = str(sort_by.get("order", "asc")).lower() if isinstance(sort_by, dict) else None
    if column not in catalog.SORT_COLUMNS or order not in ("asc", "desc"):
        raise StorageError(400, "invalid_list_options",
                           f"'sortBy' is {{column: {'|'.join(catalog.SORT_COLUMNS)}, order: asc|desc}}")
    search = body.get("search") or ""
    if not isinstance(search, str) or len(search) > settings.storage_max_path_bytes:
        raise StorageError(400, "invalid_list_options", "'search' must be a short string")
    with tenant_transaction(current_claims()) as cur:
        if not catalog.bucket_exists(cur, bucket_id):
            raise bucket_not_found(bucket_id)
        listing = catalog.list_folder(cur, bucket_id, prefix, search, column, order == "desc", limit, offset)
    return jsonify(listing)


# -- move, copy, remove -------------------------------------------------------
def _transfer_body() -> tuple[str, str, str, str]:
    body = json_body()
    bucket_id = body.get("bucketId")
    if not isinstance(bucket_id, str):
        raise StorageError(400, "invalid_request", "'bucketId' is required")
    destination_bucket = body.get("destinationBucket") or bucket_id
    if not isinstance(destination_bucket, str):
        raise StorageError(400, "invalid_request", "'destinationBucket' must be a string")
    return bucket_id, object_name(body.get("sourceKey")), destination_bucket, object_name(body.get("destinationKey"))


@bp.post("/object/move")
@storage_authorize
def move_object() -> Response:
    bucket_id, source, destination_bucket, destination = _transfer_body()
    with tenant_transaction(current_claims(), single_statement=destination_bucket == bucket_id) as cur:
        if destination_bucket != bucket_id:
            # Into another bucket: that bucket's size and MIME rules apply.
            moving = catalog.get_object(cur, bucket_id, source)
            if moving is None:
                raise object_not_found()
            _check_bucket_rules(catalog.upload_target(cur, destination_bucket, destination), moving)
        if not catalog.move_object(cur, bucket_id, source, destination_bucket, destination):
            raise object_not_found()
    return message("Successfully moved")


def _check_bucket_rules(target: catalog.UploadTarget, obj: catalog.StoredObject) -> None:
    limit = storage_service().settings.storage_max_object_bytes
    if target.file_size_limit is not None:
        limit = min(limit, target.file_size_limit)
    if obj.size > limit:
        raise payload_too_large(limit)
    limits.check_mimetype(obj.mimetype, target.allowed_mime_types)


@bp.post("/object/copy")
@storage_authorize
def copy_object() -> Response:
    bucket_id, source, destination_bucket, destination = _transfer_body()
    claims = current_claims()
    upsert = upsert_header()
    service = storage_service()
    with tenant_transaction(claims) as cur:
        original = catalog.get_object(cur, bucket_id, source)
        if original is None:
            raise object_not_found()
        target = catalog.upload_target(cur, destination_bucket, destination)
    if target.existing_size is not None and not upsert:
        raise duplicate(f"'{destination}' exists in '{destination_bucket}'")
    _check_bucket_rules(target, original)
    key = new_key(claims["tenant_id"])
    try:
        service.backend.copy(original.storage_key, key)
    except Exception as exc:  # noqa: BLE001
        raise backend_failure(exc) from None
    values = {"bucket_id": destination_bucket, "name": destination, "storage_key": key, "size": original.size,
              "mimetype": original.mimetype, "cache_control": original.cache_control, "etag": original.etag,
              "user_metadata": original.user_metadata, "owner": claims.get("sub", "")}
    object_id, _ = commit_object(claims, values, upsert)
    return jsonify(Id=object_id, Key=f"{destination_bucket}/{destination}")


@bp.delete("/object/<bucket_id>")
@storage_authorize
def remove_objects(bucket_id: str) -> Response:
    body = json_body()
    prefixes = body.get("prefixes")
    if not isinstance(prefixes, list) or not 1 <= len(prefixes) <= MAX_PATHS_PER_REQUEST:
        raise StorageError(400, "invalid_request", f"'prefixes' must list 1 to {MAX_PATHS_PER_REQUEST} object paths")
    names = [object_name(prefix) for prefix in prefixes]
    with tenant_transaction(current_claims()) as cur:
        if not catalog.bucket_exists(cur, bucket_id):
            raise bucket_not_found(bucket_id)
        removed = catalog.delete_objects(cur, bucket_id, names)
    discard([obj.storage_key for obj in removed])
    return jsonify([obj.removed_json() for obj in removed])


