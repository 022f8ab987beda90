"""Storage errors carry both shapes: the gateway's
``{"code","message","details","hint"}`` and Supabase Storage's
``{"statusCode","error","message"}``, which ``storage3`` reads to raise a
``StorageApiError(message, error, statusCode)``.  ``storage3``'s
``exists()`` treats ``statusCode`` "404" with ``error`` "not_found" as
absent, so every missing bucket or object uses exactly that code.
"""
from __future__ import annotations

import json

from flask import Response

from gateway.errors import ApiError

NOT_FOUND = "not_found"


class StorageError(ApiError):
    """An ApiError raised by the storage routes."""


def bucket_not_found(bucket_id: str) -> StorageError:
    return StorageError(404, NOT_FOUND, "Bucket not found", details=f"no bucket '{bucket_id}'")


def object_not_found() -> StorageError:
    return StorageError(404, NOT_FOUND, "Object not found")


def add_supabase_fields(response: Response) -> Response:
    """after_request hook: give every JSON error body the Supabase fields
    (errors raised anywhere, e.g. 401 from the token check, 413 from
    werkzeug, a PostgreSQL error mapped by gateway.pgerrors)."""
    if response.status_code < 400 or response.mimetype != "application/json" or response.is_streamed:
        return response
    try:
        body = json.loads(response.get_data())
    except ValueError:
        return response
    if isinstance(body, dict) and "code" in body and "statusCode" not in body:
        body = {"statusCode": str(response.status_code), "error": body["code"], **body}
        response.set_data(json.dumps(body))
    return response
