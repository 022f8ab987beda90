"""Per-tenant budgets for WASM work, set by the tenant's plan.

The native pool (``APPRUN_FUNCTION_THREADS``) is shared by every tenant.
Two budgets keep one tenant from taking it:

* **Concurrent calls**: each tenant holds at most its plan's number of pool
  threads at once, always fewer than the pool has, so others keep a share.
  A call over the cap waits for one of *its own tenant's* slots for at most
  ``APPRUN_FUNCTION_QUEUE_WAIT_MS`` (fast calls overlapping under load just
  wait microseconds), then gets 429.  Nothing else waits for it.  A slot is
  given back by the native thread the moment the call's work ends, not when
  the hub next resumes the calling greenlet: under load (another tenant's
  burst, say) that resumption can come hundreds of milliseconds later, and
  a slot held for the hub's lag would refuse a quiet tenant's calls because
  of someone else's traffic.
* **WASM time per second**: a token bucket of milliseconds per tenant,
  refilled at the plan's rate up to ``APPRUN_FUNCTION_TIME_BURST_MS``.  A
  call is admitted while the bucket is positive and charged its measured
  time on the native thread afterwards (time, not fuel: memory.fill and
  friends cost little fuel and much time).  An empty bucket is 429 with a
  ``Retry-After`` that refills it.  A call that would wait for a slot is
  refused at once when the calls holding the slots have already run longer
  than the bucket holds: whenever one of them ends, its charge empties the
  bucket, so the wait could only end in a 429.  A spinning tenant's
  callers waited up to the queue wait for it, fell behind their schedule
  together and then caught up together: a wave of requests
  (docs/fairness-measurements.md, "The burst's waves").

Budgets are per gateway process (each process has its own pool).  The
slots are a ``gateway.tenant_counter.TenantCounter`` that any thread may
give back (the native one that ran the call does), waking the tenant's
longest waiter; under gevent a waiting call yields until then, and the
bucket updates never yield.
"""
from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from gateway.db import tenant_transaction
from gateway.errors import ApiError
from gateway.native import original
from gateway.settings import Settings, SettingsError
from gateway.tenant_counter import TenantCounter

PLANS = ("free", "pro")
#: Plan used for a tenant whose plan has no budget of its own.
FALLBACK_PLAN = "free"
#: A concurrency slot frees when a call ends, which cannot be predicted.
CONCURRENCY_RETRY_AFTER_S = 1

PlanLookup = Callable[[Mapping[str, Any]], str]


@dataclass(frozen=True)
class PlanBudget:
    concurrency: int
    ms_per_s: float
    burst_ms: float


def plan_budgets(settings: Settings) -> dict[str, PlanBudget]:
    budgets = {
        "free": PlanBudget(settings.function_concurrency_free, settings.function_ms_per_s_free,
                           settings.function_time_burst_ms),
        "pro": PlanBudget(settings.function_concurrency_pro, settings.function_ms_per_s_pro,
                          settings.function_time_burst_ms),
    }
    for plan, budget in budgets.items():
        if not 1 <= budget.concurrency < settings.function_threads:
            raise SettingsError(f"APPRUN_FUNCTION_CONCURRENCY_{plan.upper()} must be at least 1 and below "
                                f"APPRUN_FUNCTION_THREADS ({settings.function_threads}), so that no tenant "
                                "can hold the whole pool")
        if budget.ms_per_s <= 0 or budget.burst_ms <= 0:
            raise SettingsError(f"the WASM time budget of plan '{plan}' must be positive")
    return budgets


class TimeBuckets:
    """Milliseconds of WASM time per tenant, refilled continuously.  The
    native thread that ran a call charges it (before it gives the call's
    slot back), the hub reads the levels: a native lock, held for a few
    dictionary operations."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._levels: dict[str, tuple[float, float]] = {}  # tenant -> (ms, at)
        self._lock = original("threading", "Lock", threading.Lock)()

    def _level(self, tenant: str, budget: PlanBudget) -> float:
        now = self._clock()
        level, at = self._levels.get(tenant, (budget.burst_ms, now))
        level = min(budget.burst_ms, level + (now - at) * budget.ms_per_s)
        self._levels[tenant] = (level, now)
        return level

    def level(self, tenant: str, budget: PlanBudget) -> float:
        """Milliseconds in the tenant's bucket now (negative: in debt)."""
        with self._lock:
            return self._level(tenant, budget)

    def retry_after_s(self, tenant: str, budget: PlanBudget) -> int | None:
        """None when the tenant may start a call, else seconds until it may."""
        level = self.level(tenant, budget)
        if level > 0:
            return None
        return refill_after_s(-level, budget)

    def charge(self, tenant: str, budget: PlanBudget, spent_ms: float) -> None:
        with self._lock:
            level = self._level(tenant, budget)
            self._levels[tenant] = (level - spent_ms, self._clock())


def refill_after_s(debt_ms: float, budget: PlanBudget) -> int:
    """Whole seconds (at least 1) until a bucket ``debt_ms`` in debt holds
    time again: the Retry-After of a spent budget."""
    return max(1, math.ceil((debt_ms + 1) / budget.ms_per_s))


def time_budget_spent(message: str, retry_after: int) -> ApiError:
    """The 429 of a tenant whose WASM time is spent."""
    return ApiError(429, "function_time_budget", message, hint=f"retry after {retry_after} s",
                    headers={"Retry-After": str(retry_after)})


class Admission:
    """One admitted call: ``charge(seconds)`` debits the WASM time it used,
    ``release()`` gives its slot back (once; safe from any thread)."""

    def __init__(self, charge: Callable[[float], None], give_back: Callable[[], None]) -> None:
        self.charge = charge
        self._give_back = give_back
        self._lock = original("threading", "Lock", threading.Lock)()
        self._released = False

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._give_back()


def _unlimited(seconds: float) -> None:
    """The charge of a call when budgets are off: nothing to debit."""


class FunctionBudgets:
    def __init__(self, plans: Mapping[str, PlanBudget], plan_of: PlanLookup, queue_wait_ms: int,
                 enabled: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        self._plans = dict(plans)
        self._plan_of = plan_of
        self._queue_wait_s = queue_wait_ms / 1000
        self.enabled = enabled
        self._buckets = TimeBuckets(clock)
        self._clock = clock
        # Given back from the native pool thread when the work ends, which
        # wakes a waiter through its hub's thread-safe callback.
        self.slots = TenantCounter()
        # tenant -> {admission id: when it was admitted}, for the calls that
        # hold slots now; the native threads remove theirs, hence the lock.
        self._running: dict[str, dict[int, float]] = {}
        self._admissions = itertools.count()
        self._running_lock = original("threading", "Lock", threading.Lock)()

    def budget_for(self, claims: Mapping[str, Any]) -> PlanBudget:
        plan = self._plan_of(claims)
        return self._plans.get(plan) or self._plans[FALLBACK_PLAN]

    def refuse_if_spent(self, claims: Mapping[str, Any]) -> None:
        """429 now if the tenant has spent its WASM time, before the route
        does any work for the call (its function lookup is a transaction):
        a tenant that keeps calling while in debt is refused at the cost of
        a dictionary lookup.  ``admit`` checks again, as the source of truth."""
        if self.enabled:
            self._refuse_if_spent(str(claims["tenant_id"]), self.budget_for(claims))

    def _refuse_if_spent(self, tenant: str, budget: PlanBudget) -> None:
        retry_after = self._buckets.retry_after_s(tenant, budget)
        if retry_after is not None:
            raise time_budget_spent(f"this tenant used its WASM time budget ({budget.ms_per_s:g} ms per second)",
                                    retry_after)

    @contextmanager
    def admit(self, claims: Mapping[str, Any]) -> Iterator[Admission]:
        """Hold one of the tenant's slots until ``release()`` (the native
        thread calls it when the work ends) or the end of the block, whichever
        comes first.  429 when over budget."""
        if not self.enabled:
            yield Admission(_unlimited, lambda: None)
            return
        tenant = str(claims["tenant_id"])
        budget = self.budget_for(claims)
        self._refuse_if_spent(tenant, budget)
        if self.slots.held(tenant) >= budget.concurrency:
            self._refuse_if_no_wait_can_pay(tenant, budget)
        # A plan change takes effect for new calls: the limit is read per call.
        if not self.slots.try_acquire(tenant, budget.concurrency, self._queue_wait_s):
            raise ApiError(429, "function_concurrency_limit",
                           f"this tenant already runs {budget.concurrency} function call(s) at once",
                           hint="retry when a call has finished",
                           headers={"Retry-After": str(CONCURRENCY_RETRY_AFTER_S)})
        try:
            # Again: a slot that came back during the wait came with its
            # call's charge, which may have emptied the bucket.
            self._refuse_if_spent(tenant, budget)
        except ApiError:
            self.slots.release(tenant)
            raise
        key = self._started(tenant)
        admission = Admission(lambda seconds: self._buckets.charge(tenant, budget, seconds * 1000),
                              lambda: self._ended(tenant, key))
        try:
            yield admission
        finally:
            admission.release()

    def _started(self, tenant: str) -> int:
        key = next(self._admissions)
        with self._running_lock:
            self._running.setdefault(tenant, {})[key] = self._clock()
        return key

    def _ended(self, tenant: str, key: int) -> None:
        """From the native thread that ran the call: its slot is free."""
        with self._running_lock:
            running = self._running.get(tenant, {})
            running.pop(key, None)
            if not running:
                self._running.pop(tenant, None)
        self.slots.release(tenant)

    def _refuse_if_no_wait_can_pay(self, tenant: str, budget: PlanBudget) -> None:
        """429 now, not after the wait, when every call holding one of the
        tenant's slots has run longer than its bucket holds: the first slot
        to free comes with a charge that empties the bucket.  Only for a
        refill of at most one millisecond per millisecond (``ms_per_s`` <=
        1000): a running call then never refills the bucket faster than it
        will be charged, so the bucket can only get emptier until it ends."""
        if budget.ms_per_s > 1000:
            return
        with self._running_lock:
            started = list(self._running.get(tenant, {}).values())
        if len(started) < budget.concurrency:
            return   # a slot is being given back now: the wait will be short
        ran_ms = (self._clock() - max(started)) * 1000    # the youngest call's time so far
        level = self._buckets.level(tenant, budget)
        if ran_ms >= level:
            raise time_budget_spent(f"this tenant's running calls have used its WASM time budget "
                                    f"({budget.ms_per_s:g} ms per second)", refill_after_s(ran_ms - level, budget))


class CachedPlanLookup:
    """``tenants.plan`` for the caller's tenant (RLS shows only its own row),
    cached for ``ttl_s`` so a call costs no extra query."""

    def __init__(self, query: Callable[[Mapping[str, Any]], str | None], ttl_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._query = query
        self._ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[str, float]] = {}

    def __call__(self, claims: Mapping[str, Any]) -> str:
        tenant = str(claims["tenant_id"])
        now = self._clock()
        cached = self._cache.get(tenant)
        if cached is not None and cached[1] > now:
            return cached[0]
        plan = self._query(claims) or FALLBACK_PLAN
        self._cache[tenant] = (plan, now + self._ttl_s)
        return plan


def plan_from_database(claims: Mapping[str, Any]) -> str | None:
    with tenant_transaction(claims, single_statement=True) as cur:
        cur.execute("SELECT plan FROM tenants WHERE id = %s", (claims["tenant_id"],))
        row = cur.fetchone()
    return row[0] if row else None
