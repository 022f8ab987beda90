"""Input checks that hold for every route, run once before routing.

Hostile input is refused here with a 400 in the JSON error shape, so no
route has to remember it (and none can forget it):

* NUL bytes (raw or ``%00``) in the path, the query string or any request
  header: PostgreSQL text cannot hold them, and psycopg2 raises a
  ``ValueError`` that used to end as a 500.
* A chunked body over ``APPRUN_MAX_BODY_BYTES``: 413 (werkzeug reads a
  chunked body up to the limit and silently drops the rest).
* Non-ASCII digits in a query value made only of digits (``limit=²``,
  ``fuel=١٢``): ``str.isdigit()`` accepts them and ``int()`` does not (or
  reads them as a number the caller did not type).  Routes that parse a
  number use :func:`parse_nonneg_int`, which accepts ASCII digits only.

``HEAD`` is answered as ``GET`` without a body (:class:`HeadAsGet`), so RBAC
and routing see one method and the answer carries GET's headers.
"""
from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, current_app, request

from gateway.errors import ApiError

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# Larger numbers than this are never a valid limit, offset or budget and
# would only stress int() and the database.
MAX_INT_DIGITS = 18
_ASCII_INT = re.compile(rf"[0-9]{{1,{MAX_INT_DIGITS}}}")


def invalid_input(message: str, details: Any = None) -> ApiError:
    return ApiError(400, "invalid_input", message, details=details)


def parse_nonneg_int(name: str, value: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    """Parse a non-negative integer written in ASCII digits (``str.isdigit``
    also accepts '²' and other scripts' digits); 400 otherwise."""
    if not _ASCII_INT.fullmatch(value):
        raise invalid_input(f"'{name}' must be a non-negative integer in ASCII digits", details=f"got {value!r}")
    number = int(value)
    if number < minimum or (maximum is not None and number > maximum):
        upper = "" if maximum is None else f" to {maximum}"
        raise invalid_input(f"'{name}' must be an integer from {minimum}{upper}", details=f"got {number}")
    return number


def _nul_source(environ: dict[str, Any]) -> str | None:
    """The environ key (path, query or header) holding a raw NUL, if any."""
    texts = [value for value in environ.values() if value.__class__ is str]
    if "\x00" not in "".join(texts):  # one C-speed scan for the common case
        return None
    return next(key for key, value in environ.items() if value.__class__ is str and "\x00" in value)


def _describe(key: str) -> str:
    if key == "PATH_INFO":
        return "the request path"
    if key == "QUERY_STRING":
        return "the query string"
    return f"the {key.removeprefix('HTTP_').replace('_', '-').title()} header"


# Object uploads stream to the backend (their size limit is enforced while
# reading, and the connection's cap is gateway.http_handler.body_limit):
# a chunked upload is never buffered in memory here.
STREAMED_PREFIX = "/storage/v1/"


def buffer_chunked_body(environ: dict[str, Any], limit: int) -> None:
    """Read a chunked body now, refusing it (413) above ``limit``; the app
    then sees an ordinary body with a Content-Length."""
    stream = environ["wsgi.input"]
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        try:
            data = stream.read(min(64 * 1024, limit + 1 - size))
        except (OSError, ValueError):  # bad chunk framing, reset, stalled past the idle timeout
            raise ApiError(400, "bad_request", "the chunked request body is malformed or incomplete") from None
        if not data:
            break
        parts.append(data)
        size += len(data)
    if size > limit:
        raise ApiError(413, "payload_too_large", f"the request body exceeds {limit} bytes")
    environ["wsgi.input"] = io.BytesIO(b"".join(parts))
    environ["CONTENT_LENGTH"] = str(size)
    environ.pop("HTTP_TRANSFER_ENCODING", None)


def check_request() -> None:
    """Flask ``before_request`` hook: refuse NUL bytes and non-ASCII digits,
    bound chunked bodies."""
    environ = request.environ
    source = _nul_source(environ)
    if source is not None:
        raise invalid_input(f"{_describe(source)} contains a NUL byte")
    query = environ.get("QUERY_STRING", "")
    if "%00" in query:
        raise invalid_input("the query string contains a NUL byte")
    # Only a percent-escape or a raw non-ASCII byte can carry a non-ASCII
    # digit, so plain query strings (nearly all) skip the per-value check.
    if "%" in query or not query.isascii():
        for key, value in request.args.items(multi=True):
            if value.isdigit() and not value.isascii():
                raise invalid_input(f"'{key}' must be written in ASCII digits", details=f"got {value!r}")
    if ("CONTENT_LENGTH" not in environ and environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"
            and not request.path.startswith(STREAMED_PREFIX)):
        buffer_chunked_body(environ, current_app.config["APPRUN_SETTINGS"].max_body_bytes)


class HeadAsGet:
    """WSGI middleware: run ``HEAD`` as ``GET`` and drop the body.

    Flask would route HEAD to GET views itself, but the RBAC policy (and any
    method check) would then see ``HEAD`` and refuse it with 403."""

    def __init__(self, wsgi_app: WsgiApp) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "HEAD":
            return self.wsgi_app(environ, start_response)
        environ["REQUEST_METHOD"] = "GET"
        body = self.wsgi_app(environ, start_response)
        close = getattr(body, "close", None)
        if close is not None:
            close()
        return []


def init_app(app: Flask) -> None:
    app.before_request(check_request)
    app.wsgi_app = HeadAsGet(app.wsgi_app)  # type: ignore[method-assign]
