"""Casbin RBAC with domains (tenant = domain), loaded once at start-up.

Decisions depend only on (role, tenant, path, method) and the policy is
static while the process runs, so each decision is memoised: the enforcer's
matcher (~70 us) runs once per distinct request shape, not per request.
"""
from __future__ import annotations

import functools
import logging
import threading
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import Any, Callable, TypeVar

import casbin
from casbin.util import key_match
from flask import Flask, current_app, g, request

from gateway.auth.identity import current_claims
from gateway.errors import ApiError

DECISION_CACHE_SIZE = 65536
F = TypeVar("F", bound=Callable[..., Any])


class Authorizer:
    def __init__(self, model_path: str | Path, policy_path: str | Path) -> None:
        # pycasbin logs the whole model and policy at INFO on every load.
        logging.getLogger("casbin").setLevel(logging.WARNING)
        self._enforcer = casbin.Enforcer(str(model_path), str(policy_path))
        # A grouping rule with domain "*" applies in every tenant.
        self._enforcer.add_named_domain_matching_func("g", key_match)
        self._enforcer.build_role_links()
        self._decisions: OrderedDict[tuple[str, str, str, str], bool] = OrderedDict()
        self._lock = threading.Lock()

    def allowed(self, role: str, tenant: str, path: str, method: str) -> bool:
        key = (role, tenant, path, method)
        with self._lock:
            decision = self._decisions.get(key)
        if decision is None:
            decision = bool(self._enforcer.enforce(role, tenant, path, method))
            with self._lock:
                self._decisions[key] = decision
                if len(self._decisions) > DECISION_CACHE_SIZE:
                    self._decisions.popitem(last=False)
        return decision

    def enforce_uncached(self, role: str, tenant: str, path: str, method: str) -> bool:
        return bool(self._enforcer.enforce(role, tenant, path, method))


def default_policy_files() -> tuple[Path, Path]:
    base = resources.files("gateway.rbac")
    return Path(str(base / "model.conf")), Path(str(base / "policy.csv"))


def authorize(fn: F) -> F:
    """Route decorator: a valid JWT (401 otherwise) whose role may call this
    path and method in the caller's tenant (403 otherwise)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        claims = current_claims()
        authorizer: Authorizer = current_app.extensions["apprun.rbac"]
        if not authorizer.allowed(claims["role"], claims["tenant_id"], request.path, request.method):
            raise ApiError(403, "forbidden", f"role '{claims['role']}' may not {request.method} {request.path}")
        g.apprun_authorized = True
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def init_app(app: Flask) -> None:
    settings = app.config["APPRUN_SETTINGS"]
    model, policy = default_policy_files()
    model = Path(settings.rbac_model_file) if settings.rbac_model_file else model
    policy = Path(settings.rbac_policy_file) if settings.rbac_policy_file else policy
    app.extensions["apprun.rbac"] = Authorizer(model, policy)
