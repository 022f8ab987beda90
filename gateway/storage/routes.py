"""``/storage/v1``: Supabase Storage's routes, as ``storage3`` calls them.

Every request runs under the caller's claims (``tenant_transaction``), so
PostgreSQL's RLS decides which buckets and objects exist for it: another
tenant's answer 404.  Casbin decides what a role may do (admins write;
users list, download and sign downloads).  Signed URLs carry their own
HMAC'd grant instead of a JWT.
"""
from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.http import http_date
from werkzeug.routing import PathConverter

from gateway.auth.identity import current_claims
from gateway.bodies import json_body
from gateway.db import tenant_transaction
from gateway.errors import ApiError
from gateway.settings import Settings
from gateway.storage import catalog, limits
from gateway.storage.backends import ObjectBackend, new_key, open_backend
from gateway.storage.errors import (
    StorageError,
    add_supabase_fields,
    bucket_not_found,
    object_not_found,
)
from gateway.storage.names import check_bucket_id, check_object_name, folder_prefix
from gateway.storage.signing import DOWNLOAD, UPLOAD, UrlSigner, derive_key
from gateway.storage.sweeper import start_periodic_sweep
from gateway.storage.uploads import MULTIPART_SLACK_BYTES, UploadBody, payload_too_large

log = logging.getLogger(__name__)
bp = Blueprint("storage", __name__, url_prefix="/storage/v1")
bp.after_request(add_supabase_fields)
F = TypeVar("F", bound=Callable[..., Any])

SIGNED_UPLOAD_EXPIRES_S = 2 * 3600
MAX_LIST_LIMIT = 1000
MAX_REMOVE_PATHS = 1000
RULE_ARGUMENT_RE = re.compile(r"<[^>]+>")
BUCKET_OPTIONS = ("public", "file_size_limit", "allowed_mime_types")


@dataclass(frozen=True)
class StorageService:
    settings: Settings
    backend: ObjectBackend
    signer: UrlSigner


def _service() -> StorageService:
    return current_app.extensions["apprun.storage"]


def storage_authorize(fn: F) -> F:
    """A valid JWT, and Casbin's decision for (role, tenant, route, method).
    The route pattern (not the concrete path) is what Casbin sees, so the
    decision cache holds one entry per route and not one per object name."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        claims = current_claims()
        rule = RULE_ARGUMENT_RE.sub("_", request.url_rule.rule if request.url_rule else request.path)
        authorizer = current_app.extensions["apprun.rbac"]
        if not authorizer.allowed(claims["role"], claims["tenant_id"], rule, request.method):
            raise StorageError(403, "forbidden", f"role '{claims['role']}' may not {request.method} {request.path}")
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _name(name: Any) -> str:
    return check_object_name(name, _service().settings.storage_max_path_bytes)


def _duplicate(what: str) -> StorageError:
    return StorageError(409, "Duplicate", "The resource already exists", details=what)


def _message(text: str) -> Response:
    return jsonify(message=text)


def _upsert_header() -> bool:
    return request.headers.get("x-upsert", "false").strip().lower() == "true"


def _discard(keys: list[str]) -> None:
    """Best effort: bytes whose row is gone; the sweeper gets any left over."""
    backend = _service().backend
    for key in keys:
        try:
            backend.delete(key)
        except Exception:
            log.warning("could not delete stored bytes %s; the orphan sweep will", key, exc_info=True)


def _backend_failure(exc: Exception) -> StorageError:
    """Called in an except block: logs the traceback, answers 503."""
    log.error("storage backend error: %s", exc, exc_info=exc)
    return StorageError(503, "storage_backend_unavailable", "the object store did not answer")


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
        raise _duplicate(f"bucket '{bucket_id}'")
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
    return _message("Successfully updated")


@bp.post("/bucket/<bucket_id>/empty")
@storage_authorize
def empty_bucket(bucket_id: str) -> Response:
    with tenant_transaction(current_claims()) as cur:
        if not catalog.bucket_exists(cur, bucket_id):
            raise bucket_not_found(bucket_id)
        removed = catalog.delete_objects(cur, bucket_id, None)
    _discard([obj.storage_key for obj in removed])
    return _message("Successfully emptied")


@bp.delete("/bucket/<bucket_id>")
@storage_authorize
def delete_bucket(bucket_id: str) -> Response:
    with tenant_transaction(current_claims(), single_statement=True) as cur:
        if not catalog.delete_bucket(cur, bucket_id):
            raise bucket_not_found(bucket_id)
    return _message("Successfully deleted")


# -- uploads ------------------------------------------------------------------
def _cache_control(value: str) -> str | None:
    value = value.strip()
    return f"max-age={value}" if value.isdigit() else (value or None)


def _store_upload(claims: dict[str, Any], bucket_id: str, name: str, upsert: bool) -> Response:
    """Bytes first (temporary file, fsync, rename), then the metadata row in
    its own transaction, which also re-checks the quota.  A failure at any
    point deletes the new bytes, so nothing half-done becomes visible."""
    service = _service()
    settings = service.settings
    name = _name(name)
    with tenant_transaction(claims, single_statement=True) as cur:
        target = catalog.upload_target(cur, bucket_id, name)
    if target.existing_size is not None and not upsert:
        raise _duplicate(f"'{name}' exists in '{bucket_id}'")
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
        raise _backend_failure(exc) from None
    values = {"bucket_id": bucket_id, "name": name, "storage_key": key, "size": body.size,
              "mimetype": body.mimetype, "cache_control": _cache_control(body.cache_control), "etag": body.etag,
              "user_metadata": body.user_metadata, "owner": claims.get("sub", "")}
    object_id, _ = _commit_object(claims, values, upsert)
    return jsonify(Id=object_id, Key=f"{bucket_id}/{name}")


def _commit_object(claims: dict[str, Any], values: dict[str, Any], upsert: bool) -> tuple[str, str | None]:
    """Insert the row for bytes already stored under values['storage_key'];
    on any failure those bytes are deleted, after success the replaced ones."""
    settings = _service().settings
    try:
        with tenant_transaction(claims) as cur:
            object_id, replaced_key = catalog.insert_object(cur, values, upsert)
            if object_id is None:
                raise _duplicate(f"'{values['name']}' exists in '{values['bucket_id']}'")
            used_bytes, used_objects, plan = catalog.usage(cur)
            limits.check_quota(limits.quota_for(settings, plan), plan, used_bytes, used_objects)
    except BaseException:
        _discard([values["storage_key"]])
        raise
    if replaced_key:
        _discard([replaced_key])
    return object_id, replaced_key


@bp.post("/object/<bucket_id>/<objectpath:name>")
@storage_authorize
def upload_object(bucket_id: str, name: str) -> Response:
    return _store_upload(current_claims(), bucket_id, name, upsert=_upsert_header())


@bp.put("/object/<bucket_id>/<objectpath:name>")
@storage_authorize
def upsert_object(bucket_id: str, name: str) -> Response:
    return _store_upload(current_claims(), bucket_id, name, upsert=True)


# -- downloads ----------------------------------------------------------------
def _content_disposition(filename: str) -> str:
    try:
        filename.encode("ascii")
        return f'attachment; filename="{filename.replace(chr(34), "")}"'
    except UnicodeEncodeError:
        return f"attachment; filename*=UTF-8''{quote(filename)}"


def _object_response(obj: catalog.StoredObject) -> Response:
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
        chunks = _service().backend.read(obj.storage_key, start, stop)
    except Exception as exc:  # noqa: BLE001 - metadata says it exists
        raise _backend_failure(exc) from None
    return Response(chunks, status=status, headers=headers, direct_passthrough=True)


def _find_object(claims: dict[str, Any], bucket_id: str, name: str) -> catalog.StoredObject:
    with tenant_transaction(claims, single_statement=True) as cur:
        obj = catalog.get_object(cur, bucket_id, name)
    if obj is None:
        raise object_not_found()
    return obj


@bp.get("/object/<bucket_id>/<objectpath:name>")
@bp.get("/object/authenticated/<bucket_id>/<objectpath:name>")
@storage_authorize
def download_object(bucket_id: str, name: str) -> Response:
    return _object_response(_find_object(current_claims(), bucket_id, _name(name)))


@bp.get("/object/info/<bucket_id>/<objectpath:name>")
@storage_authorize
def object_info(bucket_id: str, name: str) -> Response:
    return jsonify(_find_object(current_claims(), bucket_id, _name(name)).info_json())


@bp.post("/object/list/<bucket_id>")
@storage_authorize
def list_objects(bucket_id: str) -> Response:
    body = json_body()
    settings = _service().settings
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
    return bucket_id, _name(body.get("sourceKey")), destination_bucket, _name(body.get("destinationKey"))


@bp.post("/object/move")
@storage_authorize
def move_object() -> Response:
    bucket_id, source, destination_bucket, destination = _transfer_body()
    with tenant_transaction(current_claims(), single_statement=True) as cur:
        if not catalog.move_object(cur, bucket_id, source, destination_bucket, destination):
            raise object_not_found()
    return _message("Successfully moved")


@bp.post("/object/copy")
@storage_authorize
def copy_object() -> Response:
    bucket_id, source, destination_bucket, destination = _transfer_body()
    claims = current_claims()
    upsert = _upsert_header()
    service = _service()
    with tenant_transaction(claims) as cur:
        original = catalog.get_object(cur, bucket_id, source)
        if original is None:
            raise object_not_found()
        target = catalog.upload_target(cur, destination_bucket, destination)
    if target.existing_size is not None and not upsert:
        raise _duplicate(f"'{destination}' exists in '{destination_bucket}'")
    limit = min(service.settings.storage_max_object_bytes, target.file_size_limit or original.size)
    if original.size > limit:
        raise payload_too_large(limit)
    limits.check_mimetype(original.mimetype, target.allowed_mime_types)
    key = new_key(claims["tenant_id"])
    try:
        service.backend.copy(original.storage_key, key)
    except Exception as exc:  # noqa: BLE001
        raise _backend_failure(exc) from None
    values = {"bucket_id": destination_bucket, "name": destination, "storage_key": key, "size": original.size,
              "mimetype": original.mimetype, "cache_control": original.cache_control, "etag": original.etag,
              "user_metadata": original.user_metadata, "owner": claims.get("sub", "")}
    object_id, _ = _commit_object(claims, values, upsert)
    return jsonify(Id=object_id, Key=f"{destination_bucket}/{destination}")


@bp.delete("/object/<bucket_id>")
@storage_authorize
def remove_objects(bucket_id: str) -> Response:
    body = json_body()
    prefixes = body.get("prefixes")
    if not isinstance(prefixes, list) or not 1 <= len(prefixes) <= MAX_REMOVE_PATHS:
        raise StorageError(400, "invalid_request", f"'prefixes' must list 1 to {MAX_REMOVE_PATHS} object paths")
    names = [_name(prefix) for prefix in prefixes]
    with tenant_transaction(current_claims()) as cur:
        if not catalog.bucket_exists(cur, bucket_id):
            raise bucket_not_found(bucket_id)
        removed = catalog.delete_objects(cur, bucket_id, names)
    _discard([obj.storage_key for obj in removed])
    return jsonify([obj.removed_json() for obj in removed])


# -- signed URLs ----------------------------------------------------------------
def _signed_path(kind: str, bucket_id: str, name: str, token: str) -> str:
    return f"/object/{kind}/{quote(bucket_id)}/{quote(name, safe='/')}?token={token}"


@bp.post("/object/sign/<bucket_id>/<objectpath:name>")
@storage_authorize
def sign_download(bucket_id: str, name: str) -> Response:
    service = _service()
    expires_in = service.signer.expiry(json_body().get("expiresIn"))
    claims = current_claims()
    obj = _find_object(claims, bucket_id, _name(name))
    token = service.signer.sign(DOWNLOAD, claims["tenant_id"], bucket_id, obj.name, expires_in)
    return jsonify(signedURL=_signed_path("sign", bucket_id, obj.name, token))


@bp.post("/object/sign/<bucket_id>")
@storage_authorize
def sign_downloads(bucket_id: str) -> Response:
    service = _service()
    body = json_body()
    expires_in = service.signer.expiry(body.get("expiresIn"))
    paths = body.get("paths")
    if not isinstance(paths, list) or not 1 <= len(paths) <= MAX_REMOVE_PATHS:
        raise StorageError(400, "invalid_request", f"'paths' must list 1 to {MAX_REMOVE_PATHS} object paths")
    names = [_name(path) for path in paths]
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
    grant = _service().signer.verify(request.args.get("token"), DOWNLOAD, bucket_id, name)
    claims = {"tenant_id": grant.tenant_id, "role": "signed_url", "sub": ""}
    return _object_response(_find_object(claims, bucket_id, name))


@bp.post("/object/upload/sign/<bucket_id>/<objectpath:name>")
@storage_authorize
def sign_upload(bucket_id: str, name: str) -> Response:
    service = _service()
    claims = current_claims()
    name = _name(name)
    upsert = _upsert_header()
    with tenant_transaction(claims, single_statement=True) as cur:
        target = catalog.upload_target(cur, bucket_id, name)
    if target.existing_size is not None and not upsert:
        raise _duplicate(f"'{name}' exists in '{bucket_id}'")
    token = service.signer.sign(UPLOAD, claims["tenant_id"], bucket_id, name, SIGNED_UPLOAD_EXPIRES_S,
                                owner=claims["sub"], upsert=upsert)
    return jsonify(url=_signed_path("upload/sign", bucket_id, name, token), token=token)


@bp.put("/object/upload/sign/<bucket_id>/<objectpath:name>")
def signed_upload(bucket_id: str, name: str) -> Response:
    """No JWT: the token says which tenant, bucket and path may be written."""
    grant = _service().signer.verify(request.args.get("token"), UPLOAD, bucket_id, name)
    claims = {"tenant_id": grant.tenant_id, "role": "signed_url", "sub": grant.owner}
    return _store_upload(claims, bucket_id, name, upsert=grant.upsert)


@bp.route("/<objectpath:rest>", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
def unknown_route(rest: str) -> Response:
    raise StorageError(404, "route_not_found", f"no storage route {request.method} /storage/v1/{rest}")


class ObjectPathConverter(PathConverter):
    """werkzeug's path converter, newlines included: a name with a control
    character or a leading "/" (%2F) must reach the name check (400
    invalid_key), not miss every route."""
    regex = "(?s:.+?)"
    part_isolating = False


def init_app(app: Flask) -> None:
    settings: Settings = app.config["APPRUN_SETTINGS"]
    app.url_map.converters["objectpath"] = ObjectPathConverter
    service = StorageService(settings, open_backend(settings),
                             UrlSigner(derive_key(settings), settings.storage_signed_url_max_expiry_s))
    app.extensions["apprun.storage"] = service
    app.register_blueprint(bp)
    if settings.storage_sweep_interval_s > 0:
        start_periodic_sweep(app, settings.storage_sweep_interval_s, settings.storage_orphan_grace_s)
