"""The Flask app factory."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from gateway import budgets, db, errors, health, jsonio, metrics, openapi, pgerrors
from gateway.auth import routes as auth_routes
from gateway.data import routes as data_routes
from gateway.functions import routes as function_routes
from gateway.rbac import enforcer
from gateway.settings import Settings
from gateway.storage import routes as storage_routes
from gateway.workflows import routes as workflow_routes

# Each module's init_app(app) registers its part, in this order (error
# handlers and hooks before the routes).  A new part is one more entry.
COMPONENTS = (
    jsonio, errors, pgerrors, metrics, db, health, enforcer, budgets,
    auth_routes, data_routes, function_routes, workflow_routes, storage_routes, openapi,
)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the gateway.  ``config`` overrides settings read from the
    ``APPRUN_*`` environment (tests pass a dict)."""
    settings = Settings.from_env()
    if config:
        settings = settings.merged(config)
    app = Flask("gateway")
    app.config["APPRUN_SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    logging.getLogger("gateway").setLevel(logging.INFO)
    for component in COMPONENTS:
        component.init_app(app)
    return app
