"""The Flask app factory."""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
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


SYNC_CACHE_SIZE = 4096


class GatewayFlask(Flask):
    """Flask, minus one per-request cost: ``ensure_sync`` asks ``inspect``,
    for every hook, view and teardown function on every request, whether it
    is a coroutine function (four to six times per data read).  A
    function's answer never changes, so it is remembered per function."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sync_callables: dict[Callable[..., Any], Callable[..., Any]] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        try:
            return self._sync_callables[func]
        except KeyError:
            if len(self._sync_callables) >= SYNC_CACHE_SIZE:  # callables made per request: never grow unbounded
                self._sync_callables.clear()
            sync = self._sync_callables[func] = super().ensure_sync(func)
            return sync
        except TypeError:  # an unhashable callable: ask every time, as Flask does
            return super().ensure_sync(func)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the gateway.  ``config`` overrides settings read from the
    ``APPRUN_*`` environment (tests pass a dict)."""
    settings = Settings.from_env()
    if config:
        settings = settings.merged(config)
    app = GatewayFlask("gateway")
    app.config["APPRUN_SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    logging.getLogger("gateway").setLevel(logging.INFO)
    for component in COMPONENTS:
        component.init_app(app)
    return app
