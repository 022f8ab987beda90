"""``/functions``: deploy, list, describe, delete and invoke tenant WASM.

Modules are stored per tenant in PostgreSQL (RLS applies): another
tenant's function answers 404, so names do not leak.
"""
from __future__ import annotations

import json
import re
import time
from typing import Any

import orjson
import wasmtime
from flask import Blueprint, Flask, Response, current_app, jsonify, request

from gateway.auth.identity import current_claims
from gateway.bodies import check_parsed_json, raw_json_body
from gateway.db import tenant_transaction
from gateway.errors import ApiError
from gateway.functions.fairness import (
    CachedPlanLookup,
    FunctionBudgets,
    plan_budgets,
    plan_from_database,
)
from gateway.functions.inline import PLACEMENTS
from gateway.functions.limits import Limits, parse_requested_limits
from gateway.functions.runtime import FunctionRuntime
from gateway.rbac.enforcer import authorize

bp = Blueprint("functions", __name__)

# fullmatch, not ^...$: "$" also matches before a trailing newline.
NAME_RE = re.compile(r"[a-z0-9_-]{1,64}", re.ASCII)
WASM_MAGIC = b"\0asm"
METADATA_COLUMNS = "name, version, digest, size_bytes, exports, limits, deployed_at, created_at"


def _runtime() -> FunctionRuntime:
    return current_app.extensions["apprun.functions"]


def _budgets() -> FunctionBudgets:
    return current_app.extensions["apprun.function_budgets"]


def _check_name(name: str) -> None:
    """Every route checks the name before it reaches SQL: NUL, non-ASCII and
    over-long names are the caller's mistake (400), never a database error."""
    if not NAME_RE.fullmatch(name):
        raise ApiError(400, "invalid_function_name", "function names must match [a-z0-9_-]{1,64}")


def _metadata(row: tuple) -> dict[str, Any]:
    name, version, digest, size, exports, limits, deployed_at, created_at = row
    return {"name": name, "version": version, "digest": digest, "size_bytes": size, "exports": exports,
            "limits": limits, "deployed_at": deployed_at.isoformat(), "created_at": created_at.isoformat()}


def _not_found(name: str) -> ApiError:
    return ApiError(404, "function_not_found", f"no function named '{name}'")


@bp.get("/functions")
@authorize
def list_functions() -> Response:
    with tenant_transaction(current_claims()) as cur:
        cur.execute(f"SELECT {METADATA_COLUMNS} FROM functions ORDER BY name")
        rows = cur.fetchall()
    return jsonify([_metadata(row) for row in rows])


@bp.get("/functions/<name>")
@authorize
def describe_function(name: str) -> Response:
    _check_name(name)
    with tenant_transaction(current_claims()) as cur:
        cur.execute(f"SELECT {METADATA_COLUMNS} FROM functions WHERE name = %s", (name,))
        row = cur.fetchone()
    if row is None:
        raise _not_found(name)
    return jsonify(_metadata(row))


def _module_bytes() -> bytes:
    settings = current_app.config["APPRUN_SETTINGS"]
    # Modules may be larger than ordinary JSON bodies.
    request.max_content_length = settings.function_max_module_bytes
    body = request.get_data(cache=False)
    if len(body) > settings.function_max_module_bytes:
        raise ApiError(413, "payload_too_large", f"modules are limited to {settings.function_max_module_bytes} bytes")
    mimetype = request.mimetype
    if mimetype == "application/wasm":
        if not body.startswith(WASM_MAGIC):
            raise ApiError(400, "invalid_module", "body is not a WASM binary (no \\0asm header)")
        return body
    if mimetype == "text/plain":
        try:
            return bytes(wasmtime.wat2wasm(body.decode("utf-8")))
        except (UnicodeDecodeError, wasmtime.WasmtimeError) as exc:
            raise ApiError(400, "invalid_module", "WAT text does not parse",
                           details=str(exc).splitlines()[0][:500]) from None
    raise ApiError(415, "unsupported_media_type",
                   "deploy a WASM binary (Content-Type: application/wasm) or WAT text (text/plain)")


@bp.put("/functions/<name>")
@authorize
def deploy_function(name: str) -> Response:
    _check_name(name)
    runtime = _runtime()
    limits = runtime.resolve_limits(parse_requested_limits(request.args))
    wasm = _module_bytes()
    claims = current_claims()
    with _budgets().admit(claims) as admission:  # compiling uses the tenant's share of the pool
        started = time.perf_counter()
        try:
            digest, _module, exports = runtime.compile(wasm, limits)
        finally:
            admission.charge(time.perf_counter() - started)
    with tenant_transaction(claims) as cur:
        cur.execute(
            f"""INSERT INTO functions (name, digest, module, size_bytes, exports, limits)
                VALUES (%s, %s, %s, %s, %s, %s)
                ON CONFLICT (tenant_id, name) DO UPDATE
                  SET digest = EXCLUDED.digest, module = EXCLUDED.module, size_bytes = EXCLUDED.size_bytes,
                      exports = EXCLUDED.exports, limits = EXCLUDED.limits,
                      version = functions.version + 1, deployed_at = now()
                RETURNING {METADATA_COLUMNS}, (xmax = 0) AS created""",
            (name, digest, wasm, len(wasm), json.dumps(exports), json.dumps(limits.to_json())),
        )
        row = cur.fetchone()
    response = jsonify(_metadata(row[:-1]))
    response.status_code = 201 if row[-1] else 200
    response.headers["ETag"] = f'"{digest}"'
    return response


@bp.delete("/functions/<name>")
@authorize
def delete_function(name: str) -> Response:
    _check_name(name)
    with tenant_transaction(current_claims()) as cur:
        cur.execute("DELETE FROM functions WHERE name = %s RETURNING 1", (name,))
        deleted = cur.fetchone()
    if deleted is None:
        raise _not_found(name)
    return Response(status=204)


def _strict_json_body() -> Any:
    """The invocation body, refused (400) where every other route's
    ``bodies.parse_json`` refuses it.  orjson parses (fast) and already
    refuses NaN, Infinity, overflowing numbers and lone surrogates; the
    shared checks then refuse what it lets through: NUL characters and
    nesting deeper than APPRUN_MAX_JSON_DEPTH."""
    raw = raw_json_body()
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "PGRST102", "malformed JSON body", details=str(exc)[:300]) from None
    check_parsed_json(raw, value, current_app.config["APPRUN_SETTINGS"].max_json_depth)
    return value


@bp.post("/functions/<name>/invoke")
@authorize
def invoke_function(name: str) -> Response:
    _check_name(name)
    payload = _strict_json_body()
    claims = current_claims()
    _budgets().refuse_if_spent(claims)       # before the lookup: a refusal costs no transaction
    runtime = _runtime()
    with tenant_transaction(claims, single_statement=True) as cur:
        cur.execute("SELECT digest, limits FROM functions WHERE name = %s", (name,))
        row = cur.fetchone()
    if row is None:
        raise _not_found(name)
    digest, stored_limits = row

    def fetch_wasm() -> bytes:
        with tenant_transaction(claims, single_statement=True) as fetch:
            fetch.execute("SELECT module FROM functions WHERE name = %s AND digest = %s", (name, digest))
            found = fetch.fetchone()
        if found is None:  # replaced or deleted between the two queries
            raise _not_found(name)
        return bytes(found[0])

    limits = runtime.effective_limits(stored_limits or {})
    with _budgets().admit(claims) as admission:
        module, load_ms = runtime.load(digest, fetch_wasm)
        result = runtime.invoke(module, limits, payload, load_ms, charge=admission.charge,
                                on_native_done=admission.release)
    response = jsonify(result.output)
    response.headers["X-Function-Duration-Us"] = f"{result.duration_us:.1f}"
    response.headers["X-Function-Fuel-Used"] = str(result.fuel_used)
    if result.cold_start_ms is not None:
        response.headers["X-Function-Cold-Start-Ms"] = f"{result.cold_start_ms:.3f}"
    return response


def init_app(app: Flask) -> None:
    settings = app.config["APPRUN_SETTINGS"]
    metrics = app.extensions["apprun.metrics"]
    placements = {placement: metrics.wasm_placement.labels(placement) for placement in PLACEMENTS}
    runtime = FunctionRuntime(
        defaults=Limits(settings.function_fuel, settings.function_memory_bytes, settings.function_timeout_ms),
        ceilings=Limits(settings.function_fuel_ceiling, settings.function_memory_ceiling_bytes,
                        settings.function_timeout_ceiling_ms),
        tick_ms=settings.function_epoch_tick_ms,
        threads=settings.function_threads,
        thread_nice=settings.function_thread_nice,
        demote_after_ms=settings.function_demote_after_ms,
        inline_fuel=settings.function_inline_fuel,
        table_elements=settings.function_table_elements,
        pooling=settings.function_pooling,
        cache_dir=settings.function_cache_dir,
        on_cold_start=metrics.wasm_compile.observe,
        on_call=metrics.wasm_call.observe,
        on_placed=lambda placement: placements[placement].inc(),
    )
    app.extensions["apprun.functions"] = runtime
    # The plan lookup is injectable: gateway/budgets.py's tenant_plan(claims)
    # fits once it is merged; until then tenants.plan is read here (cached).
    app.extensions["apprun.function_budgets"] = FunctionBudgets(
        plan_budgets(settings), plan_of=app.extensions.get("apprun.plan_of") or CachedPlanLookup(plan_from_database),
        queue_wait_ms=settings.function_queue_wait_ms,
        # APPRUN_BUDGETS_ENABLED=0 turns every budget off, these included.
        enabled=settings.budgets_enabled and settings.function_budgets_enabled)
    app.extensions.setdefault("apprun.shutdown", []).append(runtime.close)
    app.register_blueprint(bp)
