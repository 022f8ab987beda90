"""Liveness and readiness."""
from __future__ import annotations

import psycopg2
from flask import Blueprint, Flask, Response, jsonify

from gateway.db import plain_cursor

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Response:
    try:
        with plain_cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()
    except (psycopg2.Error, OSError) as exc:
        response = jsonify(status="unavailable", checks={"database": "unreachable"},
                           code="database_unavailable", message=type(exc).__name__)
        response.status_code = 503
        return response
    return jsonify(status="ready", checks={"database": "ok"})


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
