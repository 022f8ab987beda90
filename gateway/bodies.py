"""Reading request bodies with clear errors (415 wrong type, 400 malformed)."""
from __future__ import annotations

import json
from typing import Any

from flask import request

from gateway.errors import ApiError

JSON_TYPES = ("application/json",)


def json_body(expect: type | tuple[type, ...] = dict) -> Any:
    mimetype = request.mimetype or ""
    if mimetype not in JSON_TYPES and not mimetype.endswith("+json"):
        raise ApiError(415, "unsupported_media_type", "request body must be JSON (Content-Type: application/json)",
                       details=f"got Content-Type {request.content_type or 'none'}")
    raw = request.get_data(cache=True)
    if not raw:
        raise ApiError(400, "PGRST102", "empty or invalid JSON body")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "PGRST102", "malformed JSON body", details=str(exc)) from None
    if not isinstance(body, expect):
        names = " or ".join(t.__name__ for t in (expect if isinstance(expect, tuple) else (expect,)))
        names = names.replace("dict", "object").replace("list", "array")
        raise ApiError(400, "PGRST102", f"JSON body must be an {names}")
    return body


def string_field(body: dict[str, Any], name: str, *, max_length: int = 320, required: bool = True) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, "invalid_input", f"'{name}' must be a non-empty string")
    if len(value) > max_length:
        raise ApiError(400, "invalid_input", f"'{name}' is longer than {max_length} characters")
    return value
