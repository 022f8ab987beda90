"""``/api/v1/workflows``: start registration workflows, read their status.

Ids are scoped to the tenant: each execution is recorded in
workflow_executions (RLS), and reads go through that table, so another
tenant's id answers 404.
"""
from __future__ import annotations

import json
import uuid
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from temporalio.client import Client

from gateway.auth.identity import current_claims
from gateway.auth.routes import EMAIL_RE
from gateway.bodies import json_body, string_field
from gateway.budgets import enforce_rate
from gateway.db import tenant_transaction
from gateway.errors import ApiError
from gateway.rbac.enforcer import authorize
from gateway.workflows.bridge import TemporalBridge
from gateway.workflows.shared import MAX_INJECTED_FAILURES, MAX_PROJECT_DELAY_MS, WORKFLOW_TYPES, RegistrationInput

bp = Blueprint("workflows", __name__)

DEFAULT_LIST_LIMIT = 20
MAX_LIST_LIMIT = 100
EXECUTION_COLUMNS = "workflow_id, run_id, workflow_type, status, attempts, result, error, started_at, ended_at"


def _bridge() -> TemporalBridge:
    bridge = current_app.extensions.get("apprun.temporal")
    if bridge is None:
        raise ApiError(503, "temporal_unavailable", "no workflow service configured (APPRUN_TEMPORAL_ADDRESS)")
    return bridge


def _bounded_int(data: dict[str, Any], name: str, maximum: int) -> int:
    value = data.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise ApiError(400, "invalid_input", f"'input.{name}' must be an integer from 0 to {maximum}")
    return value


def _execution(row: tuple) -> dict[str, Any]:
    workflow_id, run_id, workflow_type, status, attempts, result, error, started_at, ended_at = row
    return {"workflow_id": workflow_id, "run_id": run_id, "workflow": workflow_type, "status": status,
            "attempts": attempts, "result": result, "error": error, "started_at": started_at.isoformat(),
            "ended_at": ended_at.isoformat() if ended_at else None}


@bp.post("/api/v1/workflows/execute")
@authorize
def execute() -> Response:
    claims = current_claims()
    body = json_body()
    name = body.get("workflow")
    if not isinstance(name, str) or name not in WORKFLOW_TYPES:
        raise ApiError(400, "unknown_workflow", f"unknown workflow {name!r}", hint=f"known: {sorted(WORKFLOW_TYPES)}")
    data = body.get("input")
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_input", "'input' must be an object")
    unknown = set(data) - {"email", "fail_email_attempts", "project_delay_ms"}
    if unknown:
        raise ApiError(400, "invalid_input", f"unknown input field(s): {', '.join(sorted(unknown))}")
    email = string_field(data, "email").strip()
    if not EMAIL_RE.match(email):
        raise ApiError(400, "invalid_input", "'input.email' is not a valid e-mail address")
    workflow_input = RegistrationInput(
        claims["tenant_id"], email,
        _bounded_int(data, "fail_email_attempts", MAX_INJECTED_FAILURES),
        _bounded_int(data, "project_delay_ms", MAX_PROJECT_DELAY_MS),
    )
    # After validation, so only real starts spend the tenant's start budget.
    enforce_rate(claims, "workflow_starts")
    settings = current_app.config["APPRUN_SETTINGS"]
    workflow_id = f"{name}-{uuid.uuid4()}"
    bridge = _bridge()
    # Recorded before starting so the execution is never invisible to its
    # tenant; marked failed if Temporal refuses the start.
    with tenant_transaction(claims, single_statement=True) as cur:
        cur.execute("INSERT INTO workflow_executions (workflow_id, workflow_type, input) VALUES (%s, %s, %s)",
                    (workflow_id, name, json.dumps(data)))

    async def start(client: Client) -> str:
        handle = await client.start_workflow(WORKFLOW_TYPES[name], workflow_input, id=workflow_id,
                                             task_queue=settings.temporal_task_queue)
        return handle.result_run_id or ""

    try:
        run_id = bridge.call(start, settings.workflow_start_timeout_s)
    except Exception as exc:
        with tenant_transaction(claims, single_statement=True) as cur:
            cur.execute("UPDATE workflow_executions SET status = 'failed', error = %s, ended_at = now() "
                        "WHERE workflow_id = %s", (f"start failed: {type(exc).__name__}", workflow_id))
        if isinstance(exc, ApiError):
            raise
        raise ApiError(503, "temporal_unavailable", "the workflow could not be started",
                       details=type(exc).__name__) from None
    with tenant_transaction(claims, single_statement=True) as cur:
        cur.execute("UPDATE workflow_executions SET run_id = %s WHERE workflow_id = %s", (run_id, workflow_id))
    response = jsonify(workflow_id=workflow_id, run_id=run_id, status="running",
                       status_url=f"/api/v1/workflows/{workflow_id}")
    response.status_code = 202
    response.headers["Location"] = f"/api/v1/workflows/{workflow_id}"
    return response


@bp.get("/api/v1/workflows/<workflow_id>")
@authorize
def status(workflow_id: str) -> Response:
    with tenant_transaction(current_claims(), single_statement=True) as cur:
        cur.execute(f"SELECT {EXECUTION_COLUMNS} FROM workflow_executions WHERE workflow_id = %s", (workflow_id,))
        row = cur.fetchone()
    if row is None:
        raise ApiError(404, "workflow_not_found", f"no workflow execution '{workflow_id}'")
    return jsonify(_execution(row))


@bp.get("/api/v1/workflows")
@authorize
def recent() -> Response:
    raw_limit = request.args.get("limit", str(DEFAULT_LIST_LIMIT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIST_LIMIT:
        raise ApiError(400, "invalid_input", f"'limit' must be an integer from 1 to {MAX_LIST_LIMIT}")
    with tenant_transaction(current_claims(), single_statement=True) as cur:
        cur.execute(f"SELECT {EXECUTION_COLUMNS} FROM workflow_executions ORDER BY started_at DESC LIMIT %s",
                    (int(raw_limit),))
        rows = cur.fetchall()
    return jsonify([_execution(row) for row in rows])


def init_app(app: Flask) -> None:
    settings = app.config["APPRUN_SETTINGS"]
    if settings.temporal_address:
        bridge = TemporalBridge(settings.temporal_address, settings.temporal_namespace)
        app.extensions["apprun.temporal"] = bridge
        app.extensions.setdefault("apprun.shutdown", []).append(bridge.close)
    app.register_blueprint(bp)
