"""PostgreSQL errors to HTTP, following PostgREST's table
(https://postgrest.org/en/stable/references/errors.html)."""
from __future__ import annotations

import logging

import psycopg2
from flask import Flask, Response

from gateway.data import refusals
from gateway.errors import ApiError, error_response

log = logging.getLogger(__name__)

_EXACT = {
    "23503": 409,  # foreign_key_violation
    "23505": 409,  # unique_violation
    "25006": 405,  # read_only_sql_transaction
    "42501": 403,  # insufficient_privilege (also RLS WITH CHECK failures)
    "42883": 404,  # undefined_function
    "42P01": 404,  # undefined_table
    "42703": 400,  # undefined_column
    "57014": 504,  # query_canceled (statement_timeout)
    "P0001": 400,  # raise_exception
}
_BY_CLASS = {"08": 503, "09": 500, "0L": 403, "0P": 403, "21": 400, "22": 400, "23": 400, "28": 403, "2D": 500,
             "40": 500, "53": 503, "54": 500, "55": 500, "57": 500, "58": 500, "F0": 500, "HV": 500,
             "P0": 500, "XX": 500, "42": 400}


# Hints for errors whose PostgreSQL text does not say what to change.
_HINTS = {
    "23514": "a value is outside what the column allows; the schema's length limits are listed in the README",
    "22001": "the value is longer than the column allows",
}


def status_for(sqlstate: str | None) -> int:
    if not sqlstate:
        return 503
    return _EXACT.get(sqlstate) or _BY_CLASS.get(sqlstate[:2], 500)


def to_api_error(exc: psycopg2.Error) -> ApiError:
    status = status_for(exc.pgcode)
    if exc.pgcode is None:
        # No SQLSTATE: the connection failed or dropped.
        log.warning("database unavailable: %s", exc)
        return ApiError(503, "database_unavailable", "the database is not reachable")
    diag = exc.diag
    refusal = refusals.BY_SQLSTATE.get(exc.pgcode)
    if refusal is not None:  # a data API check refused the result (and rolled the write back)
        return ApiError(refusal.status, refusal.code, diag.message_primary or str(exc), diag.message_detail,
                        refusal.hint)
    if status >= 500:
        log.error("database error %s: %s", exc.pgcode, exc)
    hint = diag.message_hint or _HINTS.get(exc.pgcode)
    return ApiError(status, exc.pgcode, diag.message_primary or str(exc), diag.message_detail, hint)


def init_app(app: Flask) -> None:
    @app.errorhandler(psycopg2.Error)
    def _pg_error(exc: psycopg2.Error) -> Response:
        return error_response(to_api_error(exc))
