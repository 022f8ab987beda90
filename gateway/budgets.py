"""Per-tenant budgets, set by the tenant's plan (``tenants.plan``).

A tenant over one of its budgets gets **429** with ``Retry-After`` and the
usual JSON error body; no other tenant ever waits for it, because every
check is keyed by tenant and never waits (``db_connections`` may wait a
moment, but only for the tenant's own connections).

* ``DEFAULT_PLAN_BUDGETS`` holds the defaults per plan; ``APPRUN_BUDGET_PLANS``
  (JSON) overrides them.  A value of ``null`` means unlimited.
* Rates (``<name>_rps`` with ``<name>_burst``) are token buckets per tenant:
  ``rps`` tokens per second, at most ``burst`` saved up.
* Concurrency budgets (``db_connections``, ``activity_slots``) are counters
  per tenant; ``db_connections`` may wait ``db_connection_wait_ms`` for the
  tenant's own connections, never for another tenant's.
* The budgets are per gateway process: with ``--workers N`` a tenant may get
  up to N times a rate (each process has its own pools too).

Under gevent nothing here yields while holding a lock (the critical
sections are a few dict operations; a wait for a tenant's own connection
releases it), so the locks never make the hub wait; the plan
lookup's per-tenant lock is held across one query, and only by requests of
that tenant that have no cached plan at all.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from flask import Flask, current_app, g, request

from gateway.auth.identity import current_claims
from gateway.auth.tokens import TokenError
from gateway.errors import ApiError
from gateway.fair_share import FairShare
from gateway.settings import Settings, SettingsError
from gateway.tenant_counter import TenantCounter

log = logging.getLogger(__name__)

#: Route families that get a request rate each (``<family>_rps``), by the
#: first segment of the path (``/api/v1/workflows...`` is "workflows").
ROUTE_FAMILIES = ("data", "functions", "workflows", "auth", "storage")
_FAMILY_BY_SEGMENT = {"data": "data", "functions": "functions", "auth": "auth", "storage": "storage"}
WORKFLOW_PREFIX = "/api/v1/workflows"

#: Defaults per plan.  The rates are per tenant and per gateway process, set
#: well above what the kpi profile asks (README "Tenant budgets": tenant 1
#: needs ~325 data req/s, ~60 function req/s, ~20 workflow req/s and ~1.3
#: workflow starts/s at 510 req/s in total; tenant 2 ~110 data req/s), so
#: only a tenant far beyond its share is refused.
DEFAULT_PLAN_BUDGETS: dict[str, dict[str, float | None]] = {
    "free": {
        "data_rps": 1200, "data_burst": 1200,
        "functions_rps": 400, "functions_burst": 400,
        "workflows_rps": 200, "workflows_burst": 200,
        "auth_rps": 200, "auth_burst": 200,
        "storage_rps": 200, "storage_burst": 200,
        "workflow_starts_rps": 10, "workflow_starts_burst": 20,
        # Activities running at once for the tenant, in the worker.
        "activity_slots": 4,
        # Database connections held at once, out of APPRUN_DB_POOL_SIZE (20);
        # must stay below the pool size (validated in plan_budgets).
        "db_connections": 12,
        # How long a request of a tenant holding all of them waits for one of
        # its own to free before its 429 (it never waits for another
        # tenant's).  The kpi profile's paced users arrive in bursts: at 510
        # req/s with 0 ms, 3,020 of 20,947 requests were refused although
        # the median took 18 ms (README "Tenant budgets"); the wait absorbs
        # such bursts, and a tenant that holds its share for a second (slow
        # reads) is still refused.
        "db_connection_wait_ms": 1000,
        # statement_timeout of the tenant's queries, in ms; null: the pool's
        # own APPRUN_DB_STATEMENT_TIMEOUT_MS.
        "db_statement_timeout_ms": None,
        # The tenant's weight when the hub is shared out under contention
        # (gateway/fair_share.py): above weight / (the active tenants'
        # weights) of the requests in progress, its requests wait for an
        # idle hub.  0: it always yields to the others; null: never waits.
        # Equal for every plan: the order on the hub decides latency, and the
        # tenant asking less goes first (max-min fairness); a bigger plan
        # buys bigger limits, and every tenant may use a hub with time to
        # spare.
        "share_weight": 1,
    },
    "pro": {
        "data_rps": 2400, "data_burst": 2400,
        "functions_rps": 800, "functions_burst": 800,
        "workflows_rps": 400, "workflows_burst": 400,
        "auth_rps": 400, "auth_burst": 400,
        "storage_rps": 400, "storage_burst": 400,
        "workflow_starts_rps": 20, "workflow_starts_burst": 40,
        "activity_slots": 8,
        "db_connections": 16,
        "db_connection_wait_ms": 1000,
        "db_statement_timeout_ms": None,
        "share_weight": 1,
    },
}

#: Retry-After for a concurrency budget: a slot frees when a request ends,
#: which is not predictable, so the client is told to come back shortly.
CONCURRENCY_RETRY_AFTER_S = 1


class OverBudget(ApiError):
    """429: the tenant used up one of its plan's budgets."""

    def __init__(self, budget: str, plan: str, limit: float, retry_after_s: float) -> None:
        seconds = max(1, math.ceil(retry_after_s))
        super().__init__(
            429, "over_budget", f"the tenant is over its '{budget}' budget",
            details={"budget": budget, "plan": plan, "limit": limit, "retry_after_s": seconds},
            hint="retry after Retry-After seconds; a bigger plan has bigger budgets",
            headers={"Retry-After": str(seconds)},
        )


def plan_budgets(settings: Settings) -> dict[str, dict[str, float | None]]:
    """DEFAULT_PLAN_BUDGETS with APPRUN_BUDGET_PLANS merged over it."""
    plans = {plan: dict(limits) for plan, limits in DEFAULT_PLAN_BUDGETS.items()}
    raw: Any = settings.budget_plans
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            raise SettingsError(f"APPRUN_BUDGET_PLANS is not JSON: {exc}") from None
    if not isinstance(raw, Mapping):
        raise SettingsError("APPRUN_BUDGET_PLANS must be a JSON object of plan -> {budget: value}")
    if settings.budget_default_plan not in plans:
        raise SettingsError(f"APPRUN_BUDGET_DEFAULT_PLAN: unknown plan {settings.budget_default_plan!r}")
    known = set(plans[settings.budget_default_plan])
    for plan, overrides in raw.items():
        if not isinstance(overrides, Mapping):
            raise SettingsError(f"APPRUN_BUDGET_PLANS[{plan!r}] must be an object")
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise SettingsError(f"APPRUN_BUDGET_PLANS[{plan!r}]: unknown budget(s) {', '.join(unknown)}")
        for name, value in overrides.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise SettingsError(f"APPRUN_BUDGET_PLANS[{plan!r}][{name!r}] must be a number >= 0 or null")
        plans.setdefault(plan, dict(plans[settings.budget_default_plan])).update(overrides)
    if settings.budgets_enabled:
        for plan, limits in plans.items():
            _check_database_budgets(plan, limits, settings.db_pool_size)
    return plans


def _check_database_budgets(plan: str, limits: Mapping[str, float | None], pool_size: int) -> None:
    """A plan's ``db_connections`` must leave at least one connection of the
    pool to the other tenants, or one tenant could again make every other
    wait for (and time out on) the pool: 503s for the polite ones."""
    if pool_size < 2:
        raise SettingsError(f"APPRUN_DB_POOL_SIZE={pool_size} cannot be shared between tenants: the db_connections "
                            "budget needs a pool of 2 or more (or APPRUN_BUDGETS_ENABLED=0)")
    connections = limits.get("db_connections")
    if connections is None or not 1 <= connections < pool_size:
        raise SettingsError(
            f"budget plan {plan!r}: db_connections is {connections!r}, but must be a number from 1 to "
            f"APPRUN_DB_POOL_SIZE - 1 = {pool_size - 1}, so that one tenant never holds every connection "
            "of the pool (lower it in APPRUN_BUDGET_PLANS, raise APPRUN_DB_POOL_SIZE, or set "
            "APPRUN_BUDGETS_ENABLED=0)")
    wait = limits.get("db_connection_wait_ms")
    if wait is None:
        raise SettingsError(f"budget plan {plan!r}: db_connection_wait_ms must be a number of ms >= 0 "
                            "(0: refuse at once), not null")
    timeout = limits.get("db_statement_timeout_ms")
    if timeout is not None and timeout < 1:  # PostgreSQL reads 0 as "no timeout at all"
        raise SettingsError(f"budget plan {plan!r}: db_statement_timeout_ms must be >= 1 or null "
                            "(null: APPRUN_DB_STATEMENT_TIMEOUT_MS)")


class TokenBuckets:
    """One token bucket per key: ``rate`` tokens per second, at most
    ``burst`` saved.  ``take`` never waits: it answers 0.0 when a token was
    taken, else the seconds until one will be there."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._state: dict[Any, list[float]] = {}  # key -> [tokens, updated_at]
        self._lock = threading.Lock()

    def take(self, key: Any, rate: float, burst: float) -> float:
        burst = max(1.0, burst)
        now = self._clock()
        with self._lock:
            state = self._state.get(key)
            if state is None:
                state = self._state[key] = [burst, now]
            tokens = min(burst, state[0] + (now - state[1]) * rate)
            state[1] = now
            if tokens >= 1.0:
                state[0] = tokens - 1.0
                return 0.0
            state[0] = tokens
        return (1.0 - tokens) / rate if rate > 0 else math.inf


PlanLoader = Callable[[str], "str | None"]


def load_plan_from_database(tenant_id: str) -> str | None:
    """``tenants.plan`` of one tenant (RLS shows a tenant its own row only).
    The claims and the read travel in one simple-query message, i.e. one
    implicit transaction, through plain_cursor: tenant_transaction may itself
    take a ``db_connections`` slot, which needs the plan."""
    from gateway.db import SET_CLAIMS_SQL, plain_cursor

    with plain_cursor() as cur:
        cur.execute(SET_CLAIMS_SQL + "; SELECT plan FROM tenants WHERE id = %s",
                    (json.dumps({"tenant_id": tenant_id}), tenant_id))
        row = cur.fetchone()
    return row[0] if row else None


class Budgets:
    """The plans' budgets, the tenants' plans (cached) and the per-tenant
    counters; one per app (``current_app.extensions["apprun.budgets"]``)."""

    def __init__(self, settings: Settings, load_plan: PlanLoader = load_plan_from_database,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = settings.budgets_enabled
        self.plans = plan_budgets(settings)
        self.default_plan = settings.budget_default_plan
        self._ttl_s = settings.budget_plan_cache_ttl_s
        self._load_plan = load_plan
        self._clock = clock
        self._plan_cache: dict[str, tuple[str, float]] = {}  # tenant -> (plan, expires_at)
        self._lookups: dict[str, threading.Lock] = {}
        self._lookups_lock = threading.Lock()
        self.buckets = TokenBuckets(clock)
        self._concurrency: dict[str, TenantCounter] = {}
        self.fair_share = FairShare(settings.fair_share_wait_ms / 1000)

    # -- plans ---------------------------------------------------------------
    def plan_of(self, tenant_id: str) -> str:
        """The tenant's plan, from the cache while it is fresh.  When it has
        expired one request refreshes it and the others keep the old value."""
        cached = self._plan_cache.get(tenant_id)
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        with self._lookups_lock:
            lookup = self._lookups.setdefault(tenant_id, threading.Lock())
        if not lookup.acquire(blocking=cached is None):
            return cached[0]  # type: ignore[index]  # someone else is refreshing it
        try:
            cached = self._plan_cache.get(tenant_id)
            if cached is not None and cached[1] > self._clock():
                return cached[0]
            plan = self._fetch_plan(tenant_id, cached[0] if cached else None)
            self._plan_cache[tenant_id] = (plan, self._clock() + self._ttl_s)
            return plan
        finally:
            lookup.release()

    def _fetch_plan(self, tenant_id: str, previous: str | None) -> str:
        try:
            plan = self._load_plan(tenant_id)
        except Exception:  # a database hiccup must not fail every request
            log.warning("plan lookup for tenant %s failed; using %s", tenant_id, previous or self.default_plan,
                        exc_info=True)
            return previous or self.default_plan
        if plan not in self.plans:
            if plan is not None:
                log.warning("tenant %s has unknown plan %r; using %s", tenant_id, plan, self.default_plan)
            return self.default_plan
        return plan

    def limit(self, tenant_id: str, budget: str) -> tuple[str, float | None]:
        """(plan, limit) of one budget for the tenant; None is unlimited."""
        plan = self.plan_of(tenant_id)
        return plan, self.plans[plan].get(budget)

    # -- checks --------------------------------------------------------------
    def take(self, tenant_id: str, rate_name: str) -> None:
        """One token of ``<rate_name>_rps``; OverBudget when none is left."""
        if not self.enabled:
            return
        plan, rate = self.limit(tenant_id, rate_name + "_rps")
        if rate is None:
            return
        burst = self.plans[plan].get(rate_name + "_burst")
        wait_s = self.buckets.take((tenant_id, rate_name), rate, rate if burst is None else burst)
        if wait_s > 0:
            raise OverBudget(rate_name + "_rps", plan, rate, wait_s)

    def admit_share(self, tenant_id: str) -> bool:
        """Count a request of the tenant as in progress (True: call
        ``release_share`` when it ends); over its share of the hub it waits
        for an idle hub, and gets 429 ``fair_share`` when the hub stayed busy
        for ``APPRUN_FAIR_SHARE_WAIT_MS`` (gateway/fair_share.py)."""
        if not self.enabled:
            return False
        plan, weight = self.limit(tenant_id, "share_weight")
        if weight is None:
            return False
        if not self.fair_share.admit(tenant_id, weight).idle:
            share = round(self.fair_share.share_of(tenant_id), 1)
            self.fair_share.release(tenant_id)
            raise OverBudget("fair_share", plan, share, CONCURRENCY_RETRY_AFTER_S)
        return True

    def release_share(self, tenant_id: str) -> None:
        self.fair_share.release(tenant_id)

    def pause_share(self, tenant_id: str) -> None:
        """Before more work of an admitted request (a database transaction):
        over its share the tenant waits for an idle hub, then goes on."""
        if self.enabled and self.limit(tenant_id, "share_weight")[1] is not None:
            self.fair_share.pause(tenant_id)

    def counter(self, budget: str) -> TenantCounter:
        counter = self._concurrency.get(budget)
        if counter is None:
            counter = self._concurrency.setdefault(budget, TenantCounter())
        return counter

    @contextlib.contextmanager
    def slot(self, tenant_id: str, budget: str, wait_s: float = 0.0) -> Iterator[None]:
        """Hold one unit of a concurrency budget for the block; OverBudget
        when the tenant already holds its limit (at once, or when none of
        its own came back within ``wait_s``)."""
        if not self.enabled:
            yield
            return
        plan, limit = self.limit(tenant_id, budget)
        if limit is None:
            yield
            return
        counter = self.counter(budget)
        if not counter.try_acquire(tenant_id, limit, wait_s):
            raise OverBudget(budget, plan, limit, CONCURRENCY_RETRY_AFTER_S)
        try:
            yield
        finally:
            counter.release(tenant_id)

    @contextlib.contextmanager
    def database_share(self, tenant_id: str, admitted: bool = False) -> Iterator[int | None]:
        """Hold one of the tenant's ``db_connections`` for the block (429 when
        it holds them all and none of them frees within its plan's
        ``db_connection_wait_ms``) and yield its plan's statement timeout in
        ms (None: the pool's own).  Taken before the pool's connection and
        given back after it, so a tenant over its share never queues on the
        pool in front of another tenant: it waits only for itself.

        ``admitted``: a later transaction of a request whose first one was
        admitted.  It is counted but never refused, so a request that began
        writing (a workflow started in Temporal, an object's bytes stored)
        finishes instead of answering 429 with half of its work done."""
        if not self.enabled:
            yield None
            return
        limits = self.plans[self.plan_of(tenant_id)]
        timeout = limits.get("db_statement_timeout_ms")
        wait_s = (limits.get("db_connection_wait_ms") or 0) / 1000
        if admitted:
            counter = self.counter("db_connections")
            counter.try_acquire(tenant_id, math.inf)
            try:
                yield None if timeout is None else int(timeout)
            finally:
                counter.release(tenant_id)
            return
        with self.slot(tenant_id, "db_connections", wait_s):
            yield None if timeout is None else int(timeout)


# -- the API for routes and other modules (inside a request or app context) ---
def current_budgets() -> Budgets:
    return current_app.extensions["apprun.budgets"]


def tenant_plan(claims: Mapping[str, Any]) -> str:
    return current_budgets().plan_of(claims["tenant_id"])


def plan_limit(claims: Mapping[str, Any], budget: str) -> float | None:
    """The caller's plan's limit for ``budget`` (None: unlimited or budgets off)."""
    budgets = current_budgets()
    return budgets.limit(claims["tenant_id"], budget)[1] if budgets.enabled else None


def enforce_rate(claims: Mapping[str, Any], rate_name: str) -> None:
    current_budgets().take(claims["tenant_id"], rate_name)


def tenant_slot(claims: Mapping[str, Any], budget: str) -> contextlib.AbstractContextManager[None]:
    """``with tenant_slot(claims, "db_connections"): ...`` -- 429 when the
    tenant already holds its plan's number of them."""
    return current_budgets().slot(claims["tenant_id"], budget)


def route_family(path: str) -> str | None:
    segment = path[1:].partition("/")[0]
    if segment == "api":
        return "workflows" if path.startswith(WORKFLOW_PREFIX) else None
    return _FAMILY_BY_SEGMENT.get(segment)


def init_app(app: Flask) -> None:
    budgets = Budgets(app.config["APPRUN_SETTINGS"])
    app.extensions["apprun.budgets"] = budgets
    # One plan lookup (and cache) for the whole gateway: the function
    # runtime's own budgets ask this one instead of querying tenants.plan.
    app.extensions["apprun.plan_of"] = lambda claims: budgets.plan_of(claims["tenant_id"])
    if not budgets.enabled:
        return
    metrics = app.extensions.get("apprun.metrics")
    if metrics is not None:
        budgets.fair_share.on_wait = metrics.record_fair_share_wait

    @app.before_request
    def _tenant_request_rate() -> None:
        """Each tenant's request rate per route family.  Requests without a
        valid token are left to the route, which answers 401 (or needs no
        token: login, health)."""
        family = route_family(request.path)
        if family is None or "Authorization" not in request.headers:
            return
        try:
            claims = current_claims()
        except TokenError:
            return
        budgets.take(claims["tenant_id"], family)
        if budgets.admit_share(claims["tenant_id"]):
            g.apprun_share_tenant = claims["tenant_id"]

    @app.teardown_request
    def _end_share(_exc: BaseException | None) -> None:
        tenant_id = g.pop("apprun_share_tenant", None)
        if tenant_id is not None:
            budgets.release_share(tenant_id)
