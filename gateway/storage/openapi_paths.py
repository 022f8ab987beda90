"""The /storage/v1 routes in the gateway's OpenAPI document.

Generated from the blueprint's own URL rules, so a new storage route is
documented the moment it is served.  The request and response bodies follow
Supabase Storage's API (the `storage3` client is the reference, and
tests/test_storage_*.py drive it); the document gives their media types and
the error shape, which carries both the gateway's fields and Supabase's
``statusCode``/``error``.
"""
from __future__ import annotations

import re
from typing import Any

from flask import Flask

STORAGE_PREFIX = "/storage/v1"
_VARIABLE = re.compile(r"<(?:[^:>]+:)?([^>]+)>")
_ERROR_STATUSES = ("400", "401", "403", "404", "413", "415", "416", "429")
_BYTES = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
# Supabase's JSON answers are objects or arrays (a bucket list, a listing).
_JSON = {"application/json": {"schema": {}}}


def openapi_path(rule: str) -> str:
    """``/object/<bucket_id>/<objectpath:name>`` -> ``/object/{bucket_id}/{name}``."""
    return _VARIABLE.sub(r"{\1}", rule)


def _operation(path: str, method: str, variables: list[str]) -> dict[str, Any]:
    downloads = method == "get" and "/object/" in path and "/info/" not in path
    uploads = method in ("post", "put") and "{name}" in path and "/sign/" not in path
    operation: dict[str, Any] = {
        "tags": ["storage"],
        "summary": f"{method.upper()} {path} (Supabase Storage API)",
        "parameters": [{"name": v, "in": "path", "required": True, "schema": {"type": "string"}}
                       for v in variables],
        "responses": {
            "200": {"description": "Success",
                    "content": {**_BYTES, **_JSON} if downloads else _JSON},
            **{status: {"$ref": f"#/components/responses/Error{status}"} for status in _ERROR_STATUSES},
        },
    }
    if downloads:
        operation["responses"]["206"] = {"description": "Partial content (Range)", "content": _BYTES}
    if method in ("post", "put", "patch"):
        operation["requestBody"] = {"required": False, "content": {
            **(_BYTES if uploads else {}), **_JSON,
            **({"multipart/form-data": {"schema": {"type": "object"}}} if uploads else {})}}
    return operation


def storage_paths(app: Flask) -> dict[str, Any]:
    """The OpenAPI paths of every storage route ``app`` serves."""
    paths: dict[str, Any] = {}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(STORAGE_PREFIX):
            continue
        path = openapi_path(rule.rule)
        variables = _VARIABLE.findall(rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(path, method.lower(), variables)
    return {"paths": paths}
