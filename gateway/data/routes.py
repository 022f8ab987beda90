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
from gateway.data.grammar import (
    GrammarLimits,
    QueryParams,
    parse_non_negative,
    parse_query,
)
from gateway.data.negotiation import CSV, OBJECT, ResponseFormat, negotiate, rows_as_csv
from gateway.data.plans import PlanCache, ReadPlan
from gateway.data.sqlbuild import ResultShape
from gateway.db import plain_cursor, tenant_transaction
from gateway.errors import ApiError
from gateway.rbac.enforcer import authorize
from gateway.settings import Settings

bp = Blueprint("data", __name__)

RANGE_RE = re.compile(r"^\s*(?:items=)?([0-9]{1,18})-([0-9]{0,18})\s*$", re.ASCII)
RESOLUTIONS = ("merge-duplicates", "ignore-duplicates")
MISSING = ("default", "null")
# Preferences this gateway knows; with handling=strict any other is a 400.
KNOWN_PREFERENCES = {"return", "count", "resolution", "missing", "handling", "max-affected", "tx", "timezone"}


def _preferences() -> dict[str, str]:
    prefs: dict[str, str] = {}
    # The server joins repeated Prefer headers with "," into one environ
    # value; reading it there skips a scan of every header
    # (EnvironHeaders.getlist iterates the whole environ).
    for item in request.environ.get("HTTP_PREFER", "").split(","):
        key, _, value = item.strip().partition("=")
        if key:
            prefs[key.strip().lower()] = value.strip().lower()
    if prefs.get("handling") == "strict":
        unknown = sorted(set(prefs) - KNOWN_PREFERENCES)
        if unknown:
            raise ApiError(400, "PGRST122", "Invalid preferences given with handling=strict",
                           details=f"Invalid preferences: {', '.join(unknown)}")
    return prefs


def _catalog() -> Catalog:
    catalog: Catalog = current_app.extensions["apprun.catalog"]
    if not catalog.loaded:
        with plain_cursor() as cur:
            catalog.load(cur)
    return catalog


def _table(name: str) -> TableInfo:
    return _catalog().table(name)


def _settings() -> Settings:
    return current_app.config["APPRUN_SETTINGS"]


def _query(method: str) -> QueryParams:
    query = parse_query(request.args.items(multi=True), GrammarLimits.from_settings(_settings()))
    if query.columns is not None and method not in ("POST", "PATCH"):
        raise ApiError(400, "PGRST100", "'columns' applies to POST and PATCH only")
    if query.on_conflict is not None and method != "POST":
        raise ApiError(400, "PGRST100", "'on_conflict' applies to POST only")
    return query


def _range() -> tuple[int | None, int | None]:
    """(offset, limit) from a ``Range: start-end`` header, if any."""
    header = request.environ.get("HTTP_RANGE")
    if not header:
        return None, None
    match = RANGE_RE.match(header)
    if not match:
        raise ApiError(416, "PGRST103", "Requested range not satisfiable",
                       details=f"cannot parse Range {header[:64]!r}")
    start = int(match.group(1))
    if not match.group(2):
        return start, None
    end = int(match.group(2))
    if end < start:
        raise ApiError(416, "PGRST103", "Requested range not satisfiable", details="range end is before its start")
    return start, end - start + 1


def _shape(fmt: ResponseFormat, representation: bool = True, max_affected: int | None = None) -> ResultShape:
    return ResultShape(representation=representation, singular=fmt.kind == OBJECT, max_affected=max_affected,
                       strip_nulls=fmt.strip_nulls, csv=fmt.kind == CSV,
                       max_bytes=_settings().data_max_response_bytes)


def _render(body: str, count: int, fmt: ResponseFormat, info: TableInfo, query: QueryParams) -> str:
    if fmt.kind == CSV:
        return rows_as_csv(body, sqlbuild.output_names(info, query.select))
    if fmt.kind == OBJECT:
        if count != 1:  # mutations were checked in SQL already; this is for reads
            raise ApiError(406, "PGRST116", "JSON object requested, multiple (or no) rows returned",
                           details=f"The result contains {count} rows")
        return body[1:-1]  # json_agg output: strip the enclosing [ ]
    return body


def _response(body: str, status: int, fmt: ResponseFormat, headers: dict[str, str]) -> Response:
    return Response(body, status=status, headers=headers, content_type=fmt.content_type)


def _read_plan(info: TableInfo) -> ReadPlan:
    """Parse the request into its SQL and response format (400/406/416 on
    bad input, before any plan exists)."""
    query = _query("GET")
    prefs = _preferences()
    fmt = negotiate(request.environ.get("HTTP_ACCEPT"))
    settings = _settings()
    range_offset, range_limit = _range()
    offset = query.offset if query.offset is not None else (range_offset or 0)
    limit = query.limit if query.limit is not None else range_limit
    limit = settings.data_max_rows if limit is None else min(limit, settings.data_max_rows)
    want_count = prefs.get("count") in ("exact", "planned", "estimated")
    sql, params = sqlbuild.read_sql(info, query, limit, offset, with_total=want_count, shape=_shape(fmt))
    return ReadPlan(sql, tuple(params), offset, fmt, prefs["count"] if want_count else None, query)


@bp.get("/data/<table>")
@authorize
def read(table: str) -> Response:
    info = _table(table)
    environ = request.environ
    key = (table, environ.get("QUERY_STRING", ""), environ.get("HTTP_PREFER"), environ.get("HTTP_ACCEPT"),
           environ.get("HTTP_RANGE"))
    plans: PlanCache = current_app.extensions["apprun.read_plans"]
    plan = plans.get(key)
    if plan is None:
        plan = _read_plan(info)
        plans.put(key, plan)
    with tenant_transaction(current_claims(), single_statement=True) as cur:
        cur.execute(plan.sql, plan.params)
        body, returned, total = cur.fetchone()
    offset, fmt = plan.offset, plan.fmt
    if total is not None and offset > 0 and offset >= total and returned == 0:
        raise ApiError(416, "PGRST103", "Requested range not satisfiable",
                       details=f"An offset of {offset} was requested, but there are only {total} rows.",
                       headers={"Content-Range": f"*/{total}"})
    span = f"{offset}-{offset + returned - 1}" if returned else "*"
    headers = {"Content-Range": f"{span}/{total if total is not None else '*'}"}
    if plan.count_preference is not None:
        headers["Preference-Applied"] = f"count={plan.count_preference}"
    status = 206 if total is not None and returned < total else 200
    if fmt.kind == OBJECT:
        status = 200
    return _response(_render(body, returned, fmt, info, plan.query), status, fmt, headers)


def _representation(prefs: dict[str, str]) -> bool:
    wanted = prefs.get("return", "minimal")
    if wanted not in ("minimal", "representation", "headers-only"):
        raise ApiError(400, "PGRST122", f"unknown Prefer return={wanted!r}",
                       hint="use return=minimal or return=representation")
    return wanted == "representation"


def _max_affected(prefs: dict[str, str]) -> int | None:
    """``Prefer: handling=strict, max-affected=N`` (PostgREST 13): more
    affected rows than N is a 400 and the write is rolled back."""
    if "max-affected" not in prefs or prefs.get("handling") != "strict":
        return None
    return parse_non_negative("max-affected", prefs["max-affected"])


def _mutate(info: TableInfo, query: QueryParams, fmt: ResponseFormat, sql: str, params: list[Any],
            representation: bool, created: bool) -> Response:
    with tenant_transaction(current_claims(), single_statement=True) as cur:
        cur.execute(sql, params)
        result, count = cur.fetchone()
    headers = {"Content-Range": f"*/{count}"}
    if representation:
        return _response(_render(result or "[]", count, fmt, info, query), 201 if created else 200, fmt, headers)
    response = Response(status=201 if created else 204)
    response.headers.update(headers)
    return response


def _writable(info: TableInfo, allowed: bool) -> None:
    if not allowed:
        raise ApiError(405, "method_not_allowed", f"'{info.name}' is read-only", headers={"Allow": "GET"})


@bp.post("/data/<table>")
@authorize
def create(table: str) -> Response:
    info = _table(table)
    _writable(info, info.can_insert)
    query = _query("POST")
    if query.has_filters:
        raise ApiError(400, "PGRST100", "filters are not allowed on POST")
    if query.limit is not None or query.offset is not None or query.order:
        raise ApiError(400, "PGRST100", "limit, offset and order do not apply to POST")
    prefs = _preferences()
    resolution = prefs.get("resolution")
    if resolution is not None and resolution not in RESOLUTIONS:
        raise ApiError(400, "PGRST122", f"unknown Prefer resolution={resolution!r}",
                       hint="use resolution=merge-duplicates or resolution=ignore-duplicates")
    if query.on_conflict is not None and resolution is None:
        raise ApiError(400, "PGRST100", "on_conflict needs Prefer: resolution=merge-duplicates|ignore-duplicates")
    missing = prefs.get("missing", "null")
    if missing not in MISSING:
        raise ApiError(400, "PGRST122", f"unknown Prefer missing={missing!r}", hint="use missing=default")
    fmt = negotiate(request.headers.get("Accept"))
    body = json_body((dict, list))
    rows = body if isinstance(body, list) else [body]
    if not rows:
        raise ApiError(400, "PGRST102", "bulk insert needs at least one row")
    if not all(isinstance(row, dict) for row in rows):
        raise ApiError(400, "PGRST102", "every row of a bulk insert must be a JSON object")
    representation = _representation(prefs)
    shape = _shape(fmt, representation)  # max-affected is for PATCH and DELETE (PostgREST 13)
    sql, params = sqlbuild.insert_sql(info, rows, query, shape, missing_default=missing == "default",
                                      resolution=resolution)
    return _mutate(info, query, fmt, sql, params, representation, created=True)


def _require_filters(query: QueryParams, verb: str) -> None:
    if not query.has_filters and not _settings().data_allow_unfiltered_mutations:
        raise ApiError(400, "21000", f"{verb} requires a filter",
                       hint="add a filter such as id=eq.<uuid> (APPRUN_DATA_ALLOW_UNFILTERED_MUTATIONS=1 lifts this)")


@bp.patch("/data/<table>")
@authorize
def update(table: str) -> Response:
    info = _table(table)
    _writable(info, info.can_update)
    query = _query("PATCH")
    _require_filters(query, "UPDATE")
    prefs = _preferences()
    fmt = negotiate(request.headers.get("Accept"))
    changes: dict[str, Any] = json_body(dict)
    if not changes:
        raise ApiError(400, "PGRST102", "PATCH body must name at least one column")
    representation = _representation(prefs)
    shape = _shape(fmt, representation, _max_affected(prefs))
    sql, params = sqlbuild.update_sql(info, changes, query, shape)
    return _mutate(info, query, fmt, sql, params, representation, created=False)


@bp.delete("/data/<table>")
@authorize
def delete(table: str) -> Response:
    info = _table(table)
    _writable(info, info.can_delete)
    query = _query("DELETE")
    _require_filters(query, "DELETE")
    prefs = _preferences()
    fmt = negotiate(request.headers.get("Accept"))
    representation = _representation(prefs)
    shape = _shape(fmt, representation, _max_affected(prefs))
    sql, params = sqlbuild.delete_sql(info, query, shape)
    return _mutate(info, query, fmt, sql, params, representation, created=False)


def init_app(app: Flask) -> None:
    settings = app.config["APPRUN_SETTINGS"]
    app.extensions["apprun.catalog"] = Catalog(settings.data_tables, settings.data_read_only_tables)
    app.extensions["apprun.read_plans"] = PlanCache()
    app.register_blueprint(bp)
