"""The JSON error model: every error leaves the gateway as

    {"code": "...", "message": "...", "details": ..., "hint": ...}

which is PostgREST's shape, used for every route so clients need one parser.
No stack trace ever reaches a client.  A client error (4xx) logs one line;
only an unexpected error (a bug: 500) logs its traceback.
"""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, json, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the caller should see, with its HTTP status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        hint: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.hint = hint
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details, "hint": self.hint}


def error_response(error: ApiError) -> Response:
    response = Response(json.dumps(error.body()), status=error.status, mimetype="application/json")
    for key, value in error.headers.items():
        response.headers[key] = value
    return response


# Werkzeug's HTTP errors (404, 405, 413, 415, ...) mapped to stable codes.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    429: "too_many_requests",
}


# Answers that are ordinary control flow (the load test provokes 403s on
# purpose) are logged at DEBUG; other client errors (malformed or hostile
# input, 429) at INFO.
_ROUTINE_STATUSES = frozenset({401, 403, 404, 409})


def log_client_error(error: ApiError) -> None:
    """One line per refused request, never a traceback."""
    if error.status < 500:
        level = logging.DEBUG if error.status in _ROUTINE_STATUSES else logging.INFO
        # %r: the path is client input and may hold newlines (log injection).
        log.log(level, "%s %r -> %s %s: %r", request.method, request.path, error.status, error.code,
                error.message)


def init_app(app: Flask) -> None:
    from gateway import edge  # edge imports ApiError from here

    # Registered first so its checks run before every other request hook.
    edge.init_app(app)

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> Response:
        log_client_error(error)
        return error_response(error)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        headers = {}
        if status == 405 and error.valid_methods:  # type: ignore[attr-defined]
            headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
        api_error = ApiError(status, _HTTP_CODES.get(status, "http_error"), error.description or error.name,
                             headers=headers)
        log_client_error(api_error)
        return error_response(api_error)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(ApiError(500, "internal_error", "internal server error"))
