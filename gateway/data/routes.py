"""``/data/<table>``: PostgREST-compatible reads and writes, each request in
one transaction with the caller's claims set so row-level security decides.
"""
from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request

from gateway.auth.identity import current_claims
from gateway.bodies import json_body
from gateway.data import sqlbuild
from gateway.data.catalog import Catalog, TableInfo
from gateway.data.grammar import QueryParams, parse_query
from gateway.db import plain_cursor, tenant_transaction
from gateway.errors import ApiError
from gateway.rbac.enforcer import authorize

bp = Blueprint("data", __name__)

RANGE_RE = re.compile(r"^\s*(?:items=)?(\d+)-(\d*)\s*$")
SINGLE_OBJECT = "application/vnd.pgrst.object+json"
JSON_TYPE = "application/json; charset=utf-8"


def _preferences() -> dict[str, str]:
    prefs: dict[str, str] = {}
    for header in request.headers.getlist("Prefer"):
        for item in header.split(","):
            key, _, value = item.strip().partition("=")
            if key:
                prefs[key.strip().lower()] = value.strip().lower()
    return prefs


def _catalog() -> Catalog:
    catalog: Catalog = current_app.extensions["apprun.catalog"]
    if not catalog.loaded:
        with plain_cursor() as cur:
            catalog.load(cur)
    return catalog


def _table(name: str) -> TableInfo:
    return _catalog().table(name)


def _query() -> QueryParams:
    query = parse_query(request.args.items(multi=True))
    return query


def _range() -> tuple[int | None, int | None]:
    """(offset, limit) from a ``Range: start-end`` header, if any."""
    header = request.headers.get("Range")
    if not header:
        return None, None
    match = RANGE_RE.match(header)
    if not match:
        raise ApiError(416, "PGRST103", "Requested range not satisfiable", details=f"cannot parse Range {header!r}")
    start = int(match.group(1))
    if not match.group(2):
        return start, None
    end = int(match.group(2))
    if end < start:
        raise ApiError(416, "PGRST103", "Requested range not satisfiable", details="range end is before its start")
    return start, end - start + 1


def _json_response(body: str, status: int, headers: dict[str, str] | None = None) -> Response:
    response = Response(body, status=status, content_type=JSON_TYPE)
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _singular(body: str, count: int) -> str:
    if count != 1:
        raise ApiError(406, "PGRST116", "JSON object requested, multiple (or no) rows returned",
                       details=f"The result contains {count} rows")
    return body[1:-1]  # json_agg output: strip the enclosing [ ]


@bp.get("/data/<table>")
@authorize
def read(table: str) -> Response:
    info = _table(table)
    query = _query()
    prefs = _preferences()
    settings = current_app.config["APPRUN_SETTINGS"]
    range_offset, range_limit = _range()
    offset = query.offset if query.offset is not None else (range_offset or 0)
    limit = query.limit if query.limit is not None else range_limit
    limit = settings.data_max_rows if limit is None else min(limit, settings.data_max_rows)
    want_count = prefs.get("count") in ("exact", "planned", "estimated")
    sql, params = sqlbuild.read_sql(info, query, limit, offset, with_total=want_count)
    with tenant_transaction(current_claims(), single_statement=True) as cur:
        cur.execute(sql, params)
        body, returned, total = cur.fetchone()
    if total is not None and offset > 0 and offset >= total and returned == 0:
        raise ApiError(416, "PGRST103", "Requested range not satisfiable",
                       details=f"An offset of {offset} was requested, but there are only {total} rows.",
                       headers={"Content-Range": f"*/{total}"})
    span = f"{offset}-{offset + returned - 1}" if returned else "*"
    headers = {"Content-Range": f"{span}/{total if total is not None else '*'}"}
    if want_count:
        headers["Preference-Applied"] = f"count={prefs['count']}"
    status = 206 if total is not None and returned < total else 200
    if SINGLE_OBJECT in request.headers.get("Accept", ""):
        return _json_response(_singular(body, returned), 200, headers)
    return _json_response(body, status, headers)


def _mutation_response(body: str | None, count: int, representation: bool, created: bool) -> Response:
    headers = {"Content-Range": f"*/{count}"}
    if representation:
        if SINGLE_OBJECT in request.headers.get("Accept", ""):
            body = _singular(body or "[]", count)
        return _json_response(body or "[]", 201 if created else 200, headers)
    response = Response(status=201 if created else 204)
    response.headers.update(headers)
    return response


def _representation(prefs: dict[str, str]) -> bool:
    wanted = prefs.get("return", "minimal")
    if wanted not in ("minimal", "representation", "headers-only"):
        raise ApiError(400, "PGRST122", f"unknown Prefer return={wanted!r}",
                       hint="use return=minimal or return=representation")
    return wanted == "representation"


@bp.post("/data/<table>")
@authorize
def create(table: str) -> Response:
    info = _table(table)
    if not info.can_insert:
        raise ApiError(405, "method_not_allowed", f"'{table}' is read-only", headers={"Allow": "GET"})
    query = _query()
    if query.has_filters:
        raise ApiError(400, "PGRST100", "filters are not allowed on POST")
    body = json_body((dict, list))
    rows = body if isinstance(body, list) else [body]
    if not rows:
        raise ApiError(400, "PGRST102", "bulk insert needs at least one row")
    if not all(isinstance(row, dict) for row in rows):
        raise ApiError(400, "PGRST102", "every row of a bulk insert must be a JSON object")
    representation = _representation(_preferences())
    sql, params = sqlbuild.insert_sql(info, rows, query, representation)
    with tenant_transaction(current_claims(), single_statement=True) as cur:
        cur.execute(sql, params)
        result, count = cur.fetchone()
    return _mutation_response(result, count, representation, created=True)


def _require_filters(query: QueryParams, verb: str) -> None:
    settings = current_app.config["APPRUN_SETTINGS"]
    if not query.has_filters and not settings.data_allow_unfiltered_mutations:
        raise ApiError(400, "21000", f"{verb} requires a filter",
                       hint="add a filter such as id=eq.<uuid> (APPRUN_DATA_ALLOW_UNFILTERED_MUTATIONS=1 lifts this)")


@bp.patch("/data/<table>")
@authorize
def update(table: str) -> Response:
    info = _table(table)
    if not info.can_update:
        raise ApiError(405, "method_not_allowed", f"'{table}' is read-only", headers={"Allow": "GET"})
    query = _query()
    _require_filters(query, "UPDATE")
    changes: dict[str, Any] = json_body(dict)
    if not changes:
        raise ApiError(400, "PGRST102", "PATCH body must name at least one column")
    representation = _representation(_preferences())
    sql, params = sqlbuild.update_sql(info, changes, query, representation)
    with tenant_transaction(current_claims(), single_statement=True) as cur:
        cur.execute(sql, params)
        result, count = cur.fetchone()
    return _mutation_response(result, count, representation, created=False)


@bp.delete("/data/<table>")
@authorize
def delete(table: str) -> Response:
    info = _table(table)
    if not info.can_delete:
        raise ApiError(405, "method_not_allowed", f"'{table}' is read-only", headers={"Allow": "GET"})
    query = _query()
    _require_filters(query, "DELETE")
    representation = _representation(_preferences())
    sql, params = sqlbuild.delete_sql(info, query, representation)
    with tenant_transaction(current_claims(), single_statement=True) as cur:
        cur.execute(sql, params)
        result, count = cur.fetchone()
    return _mutation_response(result, count, representation, created=False)


def init_app(app: Flask) -> None:
    settings = app.config["APPRUN_SETTINGS"]
    app.extensions["apprun.catalog"] = Catalog(settings.data_tables, settings.data_read_only_tables)
    app.register_blueprint(bp)
