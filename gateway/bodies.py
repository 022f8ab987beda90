"""Reading request bodies with clear errors (415 wrong type, 400 malformed).

A JSON body is refused with 400 (PGRST102) when it holds something the
rest of the gateway cannot store or echo safely:

* ``NaN``, ``Infinity`` or a number that overflows to infinity (``1e400``):
  not JSON (RFC 8259), and ``NaN`` passes ``CHECK (price >= 0)``;
* nesting deeper than ``APPRUN_MAX_JSON_DEPTH``: Python's parser and
  serialiser recurse, and 50,000 levels raised RecursionError (a 500);
* a NUL character or a lone UTF-16 surrogate in any string or key:
  PostgreSQL text cannot hold either, so psycopg2 raised a 500.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

from flask import current_app, request

from gateway.errors import ApiError

JSON_TYPES = ("application/json",)
DEFAULT_MAX_JSON_DEPTH = 64

# Characters PostgreSQL text cannot hold.  In JSON text they can only be
# written as \u escapes, so bodies without "\u" skip the string walk.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


NUMBER_HINT = "numbers must be finite; NaN and Infinity are not JSON"


def _malformed(message: str, details: Any = None, hint: Any = None) -> ApiError:
    return ApiError(400, "PGRST102", message, details=details, hint=hint)


def _refuse_constant(name: str) -> Any:
    raise _malformed(f"{name} is not a JSON number", hint=NUMBER_HINT)


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _malformed(f"{text[:40]} is out of range for a JSON number", hint=NUMBER_HINT)
    return number


def _check_string(text: str) -> None:
    match = _UNSTORABLE.search(text)
    if match is not None:
        what = "a NUL character" if match.group() == "\x00" else "an unpaired UTF-16 surrogate"
        raise _malformed(f"a JSON string contains {what}", details=f"at index {match.start()} of {text[:40]!r}")


def check_json_tree(value: Any, max_depth: int, check_strings: bool = True) -> None:
    """Refuse nesting deeper than ``max_depth`` and, if ``check_strings``,
    strings or keys PostgreSQL cannot store.  Iterative: the point is to
    survive inputs that would overflow a recursive walk."""
    if isinstance(value, str):
        if check_strings:
            _check_string(value)
        return
    pending: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, (dict, list)) else []
    while pending:
        node, depth = pending.pop()
        if depth > max_depth:
            raise _malformed(f"JSON body is nested deeper than {max_depth} levels")
        if isinstance(node, dict):
            if check_strings:
                for key in node:
                    _check_string(key)
            children = node.values()
        else:
            children = node
        for child in children:
            if isinstance(child, (dict, list)):
                pending.append((child, depth + 1))
            elif check_strings and isinstance(child, str):
                _check_string(child)


def parse_json(raw: bytes, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> Any:
    """Strict JSON: finite numbers, bounded depth, storable strings."""
    try:
        # Strict UTF-8 (RFC 8259): json.loads(bytes) would also take UTF-16
        # and decode UTF-8-encoded surrogates ("surrogatepass").
        value = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise _malformed(f"JSON body is nested deeper than {max_depth} levels") from None
    except ApiError:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise _malformed("malformed JSON body", details=str(exc)) from None
    check_parsed_json(raw, value, max_depth)
    return value


def check_parsed_json(raw: bytes, value: Any, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> None:
    """The depth and string checks on ``value``, parsed from ``raw`` by any
    parser that already refuses malformed JSON and non-finite numbers (the
    function invoke route's orjson does; it takes NUL characters and 1024
    levels).  Cheap pre-tests (C-speed byte scans) decide whether the walk
    is needed, so a shallow body without ``\\u`` escapes costs two scans."""
    deep = raw.count(b"[") + raw.count(b"{") > max_depth
    escaped = b"\\u" in raw
    if deep or escaped:
        check_json_tree(value, max_depth, check_strings=escaped)


def raw_json_body() -> bytes:
    """The request's body bytes, once its Content-Type says JSON (else 415)
    and it is not empty (else 400); parsing is the caller's."""
    mimetype = request.mimetype or ""
    if mimetype not in JSON_TYPES and not mimetype.endswith("+json"):
        raise ApiError(415, "unsupported_media_type", "request body must be JSON (Content-Type: application/json)",
                       details=f"got Content-Type {request.content_type or 'none'}")
    raw = request.get_data(cache=True)
    if not raw:
        raise ApiError(400, "PGRST102", "empty or invalid JSON body")
    return raw


def json_body(expect: type | tuple[type, ...] = dict) -> Any:
    body = parse_json(raw_json_body(), current_app.config["APPRUN_SETTINGS"].max_json_depth)
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
