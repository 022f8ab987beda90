"""``GET /openapi.json``: an OpenAPI 3 description of every gateway route.

The data routes are generated from the data API's catalog (the exposed
tables and views, their columns and which ones the gateway may write), as
PostgREST describes its own tables: one path per table, a row schema per
table, one filter parameter per column.  Everything else is written out
here, next to the routes' contracts in the README.  Every error is the
JSON error shape ``{code, message, details, hint}``.

The document is built once per process, on first request (the catalog needs
the database), and is public: it names no tenant data.

Another route module describes its own routes by registering a fragment at
start-up, with the helpers below (``operation``, ``ref``, ``ok``,
``json_content``)::

    register_fragment(app, lambda: {"paths": {...}, "schemas": {...}})
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify

from gateway.auth.routes import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, ROLES
from gateway.data.catalog import Catalog, TableInfo
from gateway.db import plain_cursor
from gateway.errors import ApiError
from gateway.functions.limits import LIMIT_PARAMS
from gateway.settings import Settings
from gateway.workflows.routes import MAX_LIST_LIMIT
from gateway.workflows.shared import MAX_INJECTED_FAILURES, MAX_PROJECT_DELAY_MS, WORKFLOW_TYPES

OPENAPI_VERSION = "3.0.3"
DOCUMENT_KEY = "apprun.openapi"
FRAGMENTS_KEY = "apprun.openapi.fragments"
FUNCTION_NAME_PATTERN = "^[a-z0-9_-]{1,64}$"
# What the catalog does not carry but a client (and a fuzzer) needs to write
# valid rows: nullability, defaults and lengths, from the same schema.
COLUMN_DETAILS_SQL = """
SELECT c.table_name, c.column_name, c.is_nullable = 'YES', c.column_default IS NOT NULL,
       c.character_maximum_length, c.numeric_precision, c.numeric_scale
FROM information_schema.columns c
WHERE c.table_schema = 'public' AND c.table_name = ANY(%s)
"""
# PostgreSQL type (information_schema.data_type) -> JSON schema of the value
# json_agg writes for it.
_TYPE_SCHEMAS: dict[str, dict[str, Any]] = {
    "uuid": {"type": "string", "format": "uuid"},
    "text": {"type": "string"},
    "character varying": {"type": "string"},
    "character": {"type": "string"},
    "boolean": {"type": "boolean"},
    "smallint": {"type": "integer"},
    "integer": {"type": "integer"},
    "bigint": {"type": "integer"},
    "numeric": {"type": "number"},
    "real": {"type": "number"},
    "double precision": {"type": "number"},
    "date": {"type": "string", "format": "date"},
    "timestamp with time zone": {"type": "string", "format": "date-time"},
    "timestamp without time zone": {"type": "string"},
    "jsonb": {},
    "json": {},
}
# Columns the gateway sets from the caller's token: a client never sends them.
TOKEN_COLUMNS = ("tenant_id",)
ERROR_RESPONSES = {
    "400": "Bad request: malformed input, unknown column, bad grammar or value",
    "401": "Missing, invalid or expired bearer token",
    "403": "The caller's role may not do this, or row-level security refused the row",
    "404": "No such resource (or it belongs to another tenant)",
    "405": "Method not allowed on this resource",
    "406": "A single object was requested but not exactly one row matched",
    "409": "Conflict with an existing row",
    "413": "Body larger than the limit",
    "415": "Unsupported Content-Type",
    "416": "Range not satisfiable",
    "422": "The function trapped, ran out of fuel or memory",
    "429": "Over one of the tenant's budgets (request rates, workflow starts, database connections, function "
           "slots and time, its share of the gateway) or too many login attempts: wait Retry-After seconds",
    "502": "The function returned output that is not valid JSON",
    "503": "A backing service is unavailable",
    "504": "The function, the query or the workflow service took longer than its limit",
}
# Answers every route can give: the edge refuses malformed requests (400)
# and oversized bodies (413) before any handler.
COMMON_ERRORS = ("400", "413")
# Every authenticated route belongs to a route family with tenant budgets
# (gateway/budgets.py), so any of them may answer 429.
AUTHENTICATED_ERRORS = COMMON_ERRORS + ("401", "403", "429")

bp = Blueprint("openapi", __name__)


def ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def ok(description: str, schema: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    if schema is not None:
        response["content"] = json_content(schema)
    response.update(extra)
    return response


def operation(summary: str, responses: dict[str, Any], errors: tuple[str, ...], *, tag: str,
               public: bool = False, **extra: Any) -> dict[str, Any]:
    all_errors = (COMMON_ERRORS if public else AUTHENTICATED_ERRORS) + errors
    operation: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": dict(responses)}
    for status in sorted(set(all_errors)):
        operation["responses"][status] = ref("responses", f"Error{status}")
    if public:
        operation["security"] = []
    operation.update(extra)
    return operation


# --- data ----------------------------------------------------------------------

class ColumnDetails:
    def __init__(self, nullable: bool, has_default: bool, max_length: int | None, precision: int | None,
                 scale: int | None) -> None:
        self.nullable = nullable
        self.has_default = has_default
        self.max_length = max_length
        self.precision = precision
        self.scale = scale


def _column_details(tables: list[str]) -> dict[tuple[str, str], ColumnDetails]:
    with plain_cursor() as cur:
        cur.execute(COLUMN_DETAILS_SQL, (tables,))
        return {(table, column): ColumnDetails(*rest) for table, column, *rest in cur.fetchall()}


def _value_schema(data_type: str, details: ColumnDetails | None, *, for_input: bool) -> dict[str, Any]:
    schema = dict(_TYPE_SCHEMAS.get(data_type, {}))
    if details is None:
        return schema
    if details.max_length and schema.get("type") == "string":
        schema["maxLength"] = details.max_length
    if for_input and data_type == "numeric" and details.precision is not None:
        # numeric(p, s) holds |x| < 10^(p-s); the gateway sends JSON numbers as they are.
        bound = 10 ** (details.precision - (details.scale or 0))
        schema.update({"exclusiveMaximum": True, "maximum": bound, "exclusiveMinimum": True, "minimum": -bound})
    if details.nullable and schema:
        schema["nullable"] = True
    return schema


def _row_schema(table: TableInfo, details: dict[tuple[str, str], ColumnDetails]) -> dict[str, Any]:
    # Aliases (select=alias:column) rename keys, so other keys may appear.
    properties = {column: _value_schema(table.types[column], details.get((table.name, column)), for_input=False)
                  for column in table.columns}
    return {"type": "object", "properties": properties}


def _input_schema(table: TableInfo, details: dict[tuple[str, str], ColumnDetails], *, insert: bool) -> dict[str, Any]:
    columns = [c for c in table.columns if c not in TOKEN_COLUMNS]
    properties = {c: _value_schema(table.types[c], details.get((table.name, c)), for_input=True) for c in columns}
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if insert:
        required = [c for c in columns if (d := details.get((table.name, c))) and not d.nullable and not d.has_default]
        if required:
            schema["required"] = required
    else:
        schema["minProperties"] = 1
    return schema


def _data_parameters(table: TableInfo, *, read: bool) -> list[dict[str, Any]]:
    filter_help = "PostgREST filter: [not.]op.value with op in eq neq gt gte lt lte like ilike in is"
    parameters: list[dict[str, Any]] = [
        {"name": column, "in": "query", "required": False, "description": filter_help, "schema": {"type": "string"}}
        for column in table.columns
    ]
    parameters += [
        {"name": "or", "in": "query", "required": False, "description": "or=(filter,filter,...), nestable",
         "schema": {"type": "string"}},
        {"name": "and", "in": "query", "required": False, "description": "and=(filter,filter,...), nestable",
         "schema": {"type": "string"}},
        {"name": "select", "in": "query", "required": False, "description": "columns: a,b,alias:c or *",
         "schema": {"type": "string"}},
        {"name": "Prefer", "in": "header", "required": False,
         "description": "return=minimal|representation, count=exact", "schema": {"type": "string"}},
    ]
    if read:
        parameters += [
            {"name": "order", "in": "query", "required": False,
             "description": "col.asc|desc[.nullsfirst|.nullslast],...", "schema": {"type": "string"}},
            {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
            {"name": "offset", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
            {"name": "Range", "in": "header", "required": False, "description": "start-end (rows, 0-based)",
             "schema": {"type": "string", "pattern": "^[0-9]+-[0-9]*$"}},
        ]
    return parameters


def _data_paths(tables: list[TableInfo], details: dict[tuple[str, str], ColumnDetails]) -> dict[str, Any]:
    content_range = {"Content-Range": {"description": "start-end/total ('*' when not counted)",
                                       "schema": {"type": "string"}}}
    paths: dict[str, Any] = {}
    for table in tables:
        rows = {"type": "array", "items": ref("schemas", table.name)}
        item: dict[str, Any] = {
            "get": operation(
                f"Read {table.name} (the caller's tenant only)",
                {"200": ok("Rows", rows, headers=content_range),
                 "206": ok("A partial page of a counted read", rows, headers=content_range)},
                ("404", "406", "416", "504"), tag="data", parameters=_data_parameters(table, read=True)),
        }
        if table.can_insert:
            body = {"oneOf": [ref("schemas", f"{table.name}.insert"),
                              {"type": "array", "minItems": 1, "items": ref("schemas", f"{table.name}.insert")}]}
            item["post"] = operation(
                f"Insert into {table.name} (admin); tenant_id comes from the token",
                {"201": ok("Created; the rows when Prefer: return=representation")},
                ("404", "405", "406", "409", "415", "504"), tag="data",
                parameters=_data_parameters(table, read=False)[-2:] + [
                    {"name": "columns", "in": "query", "required": False,
                     "description": "the columns to take from each row, a,b,c (others get their defaults)",
                     "schema": {"type": "string"}},
                    {"name": "on_conflict", "in": "query", "required": False,
                     "description": "unique columns for an upsert with Prefer: resolution=merge-duplicates|"
                                    "ignore-duplicates", "schema": {"type": "string"}}],
                requestBody={"required": True, "content": json_content(body)})
        if table.can_update:
            item["patch"] = operation(
                f"Update {table.name} rows matching the filters (admin)",
                {"200": ok("The updated rows (Prefer: return=representation)", rows, headers=content_range),
                 "204": ok("Updated")},
                ("404", "405", "406", "409", "415", "504"), tag="data",
                parameters=_data_parameters(table, read=False),
                requestBody={"required": True, "content": json_content(ref("schemas", f"{table.name}.update"))})
        if table.can_delete:
            item["delete"] = operation(
                f"Delete {table.name} rows matching the filters (admin)",
                {"200": ok("The deleted rows (Prefer: return=representation)", rows, headers=content_range),
                 "204": ok("Deleted")},
                ("404", "405", "406", "409", "504"), tag="data", parameters=_data_parameters(table, read=False))
        paths[f"/data/{table.name}"] = item
    return paths


def _data_schemas(tables: list[TableInfo], details: dict[tuple[str, str], ColumnDetails]) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for table in tables:
        schemas[table.name] = _row_schema(table, details)
        if table.can_insert:
            schemas[f"{table.name}.insert"] = _input_schema(table, details, insert=True)
        if table.can_update:
            schemas[f"{table.name}.update"] = _input_schema(table, details, insert=False)
    return schemas


def _exposed_tables(catalog: Catalog, settings: Settings) -> list[TableInfo]:
    if not catalog.loaded:
        with plain_cursor() as cur:
            catalog.load(cur)
    tables = []
    for name in settings.data_tables:
        try:
            tables.append(catalog.table(name))
        except ApiError:  # configured but absent from the database
            continue
    return tables


# --- the other routes ----------------------------------------------------------

def _fixed_schemas() -> dict[str, Any]:
    timestamp = {"type": "string", "format": "date-time"}
    limits = {"type": "object", "properties": {name: {"type": "integer"} for name in LIMIT_PARAMS}}
    return {
        "Error": {
            "type": "object",
            "description": "Every error of every route (PostgREST's shape)",
            "required": ["code", "message", "details", "hint"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                           "details": {"description": "any JSON value or null"},
                           "hint": {"description": "any JSON value or null"}},
        },
        "Credentials": {
            "type": "object", "required": ["email", "password"],
            "properties": {"email": {"type": "string", "maxLength": 320},
                           "password": {"type": "string", "maxLength": MAX_PASSWORD_LENGTH}},
        },
        "Token": {
            "type": "object", "required": ["access_token", "token_type", "expires_in"],
            "properties": {"access_token": {"type": "string"}, "token_type": {"type": "string", "enum": ["bearer"]},
                           "expires_in": {"type": "integer"}},
        },
        "Registration": {
            "type": "object", "required": ["email", "password"],
            "properties": {"email": {"type": "string", "format": "email", "maxLength": 320},
                           "password": {"type": "string", "minLength": MIN_PASSWORD_LENGTH,
                                        "maxLength": MAX_PASSWORD_LENGTH},
                           "role": {"type": "string", "enum": list(ROLES), "default": "user"}},
        },
        "User": {
            "type": "object", "required": ["id", "email", "role", "tenant_id"],
            "properties": {"id": {"type": "string", "format": "uuid"}, "email": {"type": "string"},
                           "role": {"type": "string", "enum": list(ROLES)},
                           "tenant_id": {"type": "string", "format": "uuid"}},
        },
        "Claims": {
            "type": "object", "required": ["sub", "tenant_id", "role"],
            "properties": {"sub": {"type": "string"}, "tenant_id": {"type": "string"},
                           "role": {"type": "string"}, "email": {"type": "string", "nullable": True},
                           "exp": {"type": "integer", "nullable": True}},
        },
        "JWKS": {"type": "object", "required": ["keys"],
                 "properties": {"keys": {"type": "array", "items": {"type": "object"}}}},
        "FunctionLimits": limits,
        "Function": {
            "type": "object",
            "required": ["name", "version", "digest", "size_bytes", "exports", "limits", "deployed_at", "created_at"],
            "properties": {"name": {"type": "string"}, "version": {"type": "integer"},
                           "digest": {"type": "string"}, "size_bytes": {"type": "integer"},
                           "exports": {"type": "array", "items": {"type": "object"}},
                           "limits": limits, "deployed_at": timestamp, "created_at": timestamp},
        },
        "Invocation": {
            "description": "The handler's JSON request; exactly {export, args} calls a numeric export instead",
        },
        "WorkflowRequest": {
            "type": "object", "required": ["workflow", "input"],
            "properties": {
                "workflow": {"type": "string", "enum": sorted(WORKFLOW_TYPES)},
                "input": {"type": "object", "required": ["email"], "additionalProperties": False,
                          "properties": {
                              "email": {"type": "string", "format": "email", "maxLength": 320},
                              "fail_email_attempts": {"type": "integer", "minimum": 0,
                                                      "maximum": MAX_INJECTED_FAILURES},
                              "project_delay_ms": {"type": "integer", "minimum": 0,
                                                   "maximum": MAX_PROJECT_DELAY_MS}}},
            },
        },
        "WorkflowStarted": {
            "type": "object", "required": ["workflow_id", "run_id", "status", "status_url"],
            "properties": {"workflow_id": {"type": "string"}, "run_id": {"type": "string"},
                           "status": {"type": "string", "enum": ["running"]}, "status_url": {"type": "string"}},
        },
        "WorkflowExecution": {
            "type": "object",
            "required": ["workflow_id", "run_id", "workflow", "status", "attempts", "result", "error", "started_at",
                         "ended_at"],
            "properties": {"workflow_id": {"type": "string"}, "run_id": {"type": "string", "nullable": True},
                           "workflow": {"type": "string"},
                           "status": {"type": "string", "enum": ["running", "completed", "failed"]},
                           "attempts": {"type": "integer"}, "result": {"nullable": True},
                           "error": {"type": "string", "nullable": True}, "started_at": timestamp,
                           "ended_at": {**timestamp, "nullable": True}},
        },
        "Health": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
        "Readiness": {
            "type": "object", "required": ["status", "checks"],
            "properties": {"status": {"type": "string", "enum": ["ready", "unavailable"]},
                           "checks": {"type": "object", "additionalProperties": {"type": "string"}},
                           "code": {"type": "string"}, "message": {"type": "string"}},
        },
    }


def _fixed_paths() -> dict[str, Any]:
    function_name = {"name": "name", "in": "path", "required": True,
                     "schema": {"type": "string", "pattern": FUNCTION_NAME_PATTERN}}
    function = ref("schemas", "Function")
    limit_parameters = [{"name": name, "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1}}
                        for name in LIMIT_PARAMS]
    workflow = ref("schemas", "WorkflowExecution")
    return {
        "/auth/login": {"post": operation(
            "Log in: a bearer token for the user", {"200": ok("A token", ref("schemas", "Token"))},
            ("401", "415", "429"), tag="auth", public=True,
            requestBody={"required": True, "content": json_content(ref("schemas", "Credentials"))})},
        "/auth/register": {"post": operation(
            "Create a user in the admin's own tenant (admin)", {"201": ok("The user", ref("schemas", "User"))},
            ("409", "415", "429"), tag="auth",
            requestBody={"required": True, "content": json_content(ref("schemas", "Registration"))})},
        "/auth/me": {"get": operation(
            "The caller's verified claims", {"200": ok("Claims", ref("schemas", "Claims"))}, (), tag="auth")},
        "/.well-known/jwks.json": {"get": operation(
            "Public keys for RS256/EdDSA tokens (empty for HS256)", {"200": ok("JWKS", ref("schemas", "JWKS"))},
            (), tag="auth", public=True)},
        "/functions": {"get": operation(
            "The tenant's functions", {"200": ok("Metadata", {"type": "array", "items": function})}, (),
            tag="functions")},
        "/functions/{name}": {
            "parameters": [function_name],
            "get": operation("One function's metadata", {"200": ok("Metadata", function)}, ("404",),
                              tag="functions"),
            "put": operation(
                "Deploy (or replace) a function (admin): a WASM binary or WAT text",
                {"200": ok("Replaced", function, headers={"ETag": {"schema": {"type": "string"}}}),
                 "201": ok("Created", function, headers={"ETag": {"schema": {"type": "string"}}})},
                ("415",), tag="functions", parameters=limit_parameters,
                requestBody={"required": True, "content": {
                    "application/wasm": {"schema": {"type": "string", "format": "binary"}},
                    "text/plain": {"schema": {"type": "string"}}}}),
            "delete": operation("Delete a function (admin)", {"204": ok("Deleted")}, ("404",), tag="functions"),
        },
        "/functions/{name}/invoke": {
            "parameters": [function_name],
            "post": operation(
                "Invoke a function with a JSON request",
                {"200": ok("The function's JSON output", {"description": "any JSON value"},
                            headers={"X-Function-Duration-Us": {"schema": {"type": "string"}},
                                     "X-Function-Fuel-Used": {"schema": {"type": "string"}}})},
                ("404", "415", "422", "429", "502", "504"), tag="functions",
                requestBody={"required": True, "content": json_content(ref("schemas", "Invocation"))}),
        },
        "/api/v1/workflows/execute": {"post": operation(
            "Start a workflow (admin)",
            {"202": ok("Started", ref("schemas", "WorkflowStarted"),
                        headers={"Location": {"schema": {"type": "string"}}})},
            ("415", "503", "504"), tag="workflows",
            requestBody={"required": True, "content": json_content(ref("schemas", "WorkflowRequest"))})},
        "/api/v1/workflows": {"get": operation(
            "The tenant's latest workflow executions",
            {"200": ok("Executions, newest first", {"type": "array", "items": workflow})}, (), tag="workflows",
            parameters=[{"name": "limit", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT}}])},
        "/api/v1/workflows/{workflow_id}": {"get": operation(
            "One workflow execution: status, result, attempts", {"200": ok("The execution", workflow)}, ("404",),
            tag="workflows",
            parameters=[{"name": "workflow_id", "in": "path", "required": True, "schema": {"type": "string"}}])},
        "/healthz": {"get": operation("Liveness", {"200": ok("Alive", ref("schemas", "Health"))}, (),
                                       tag="health", public=True)},
        "/readyz": {"get": operation(
            "Readiness: the database answers",
            {"200": ok("Ready", ref("schemas", "Readiness")),
             "503": ok("Not ready", ref("schemas", "Readiness"))}, (), tag="health", public=True)},
        "/metrics": {"get": operation(
            "Prometheus metrics of this gateway process",
            {"200": {"description": "Prometheus text format",
                     "content": {"text/plain": {"schema": {"type": "string"}}}}}, (), tag="health", public=True)},
        "/openapi.json": {"get": operation(
            "This document", {"200": ok("OpenAPI 3 document", {"type": "object"})}, (), tag="health",
            public=True)},
    }


Fragment = Callable[[], dict[str, Any]]


def register_fragment(app: Flask, fragment: Fragment) -> None:
    """Add a module's own paths (and component schemas) to the document."""
    app.extensions.setdefault(FRAGMENTS_KEY, []).append(fragment)


def build_document(catalog: Catalog, settings: Settings, fragments: Sequence[Fragment] = ()) -> dict[str, Any]:
    tables = _exposed_tables(catalog, settings)
    details = _column_details([t.name for t in tables])
    paths = {**_fixed_paths(), **_data_paths(tables, details)}
    schemas = {**_fixed_schemas(), **_data_schemas(tables, details)}
    for fragment in fragments:
        part = fragment()
        paths.update(part.get("paths", {}))
        schemas.update(part.get("schemas", {}))
    error = ref("schemas", "Error")
    responses = {f"Error{status}": {"description": description, "content": json_content(error)}
                 for status, description in ERROR_RESPONSES.items()}
    responses["Error429"]["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "apprun gateway", "version": "1",
                 "description": "JWT identity, tenant isolation (row-level security), Casbin RBAC, a "
                                "PostgREST-compatible data API, WASM functions and Temporal workflows."},
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "tags": [{"name": name} for name in sorted({tag for item in paths.values() for op in item.values()
                                                    if isinstance(op, dict) for tag in op.get("tags", ())})],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": schemas,
            "responses": responses,
        },
    }


@bp.get("/openapi.json")
def openapi_document() -> Response:
    document = current_app.extensions.get(DOCUMENT_KEY)
    if document is None:
        document = build_document(current_app.extensions["apprun.catalog"], current_app.config["APPRUN_SETTINGS"],
                                  current_app.extensions.get(FRAGMENTS_KEY, []))
        current_app.extensions[DOCUMENT_KEY] = document
    return jsonify(document)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
