"""Database fairness: each tenant holds at most its plan's share of the
connection pool (``db_connections``), so a tenant over it gets 429 at once
and another tenant is still answered; the plan's statement timeout applies
to the tenant's own queries only.

Connections are held in-process (transactions left open by a thread in a
request context of its own, as slow reads would hold them): the data API cannot reach
``pg_sleep``, and holding them this way asserts the behaviour without
timing anything.
"""
from __future__ import annotations

import contextlib
import threading
import time
import uuid
from typing import Any

import psycopg2.errors
import pytest

from gateway.budgets import OverBudget, plan_budgets
from gateway.db import plain_cursor, tenant_transaction
from gateway.settings import Settings, SettingsError
from tests.conftest import NO_FUNCTION_POOLING, TENANT_1, TENANT_2, auth

POOL_SIZE = 3
HOLD_DEADLINE_S = 60.0  # generous: only reached when something is broken
ALICE_CLAIMS = {"tenant_id": TENANT_1, "role": "user", "sub": "in-process-alice"}
CHARLIE_CLAIMS = {"tenant_id": TENANT_2, "role": "user", "sub": "in-process-charlie"}


class HeldConnections:
    """A thread that opens up to ``count`` transactions of the tenant in a
    request context of its own and keeps them open (each holds a pooled
    connection, as a slow read would) until the block ends.

    A thread, not the test's own context: a request context pushed around
    the test client's requests would share its app context, and with it the
    claims cached in ``flask.g``."""

    def __init__(self, app: Any, claims: dict[str, Any], count: int, request: bool = True) -> None:
        self._app, self._claims, self._count, self._request = app, claims, count, request
        self.held = 0
        self.refusal: OverBudget | None = None
        self._ready, self._done = threading.Event(), threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        try:
            with contextlib.ExitStack() as stack:
                for _ in range(self._count):
                    # Each transaction is a request of its own: a request's
                    # later transactions are never refused.
                    stack.enter_context(self._app.app_context())
                    if self._request:
                        stack.enter_context(self._app.test_request_context("/"))
                    try:
                        cur = stack.enter_context(tenant_transaction(self._claims))
                    except OverBudget as exc:
                        self.refusal = exc
                        break
                    cur.execute("SELECT 1")  # a transaction is open on the connection
                    self.held += 1
                self._ready.set()
                self._done.wait(HOLD_DEADLINE_S)
        except BaseException as exc:  # noqa: BLE001 - reported in __enter__
            self._failure = exc
        finally:
            self._ready.set()

    def __enter__(self) -> HeldConnections:
        self._thread.start()
        assert self._ready.wait(HOLD_DEADLINE_S), "the holder thread did not take its connections in time"
        if self._failure is not None:
            raise self._failure
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def release(self) -> None:
        """Give the connections back (again: a no-op)."""
        self._done.set()
        self._thread.join(HOLD_DEADLINE_S)
        assert not self._thread.is_alive(), "the holder thread did not give its connections back"


@pytest.fixture(scope="module")
def small_pool_app(app_config):
    """A pool of 3 connections; a tenant may hold 2 of them, and is refused
    at once over them (the wait has a test of its own)."""
    from gateway.app import create_app

    return create_app({**app_config, **NO_FUNCTION_POOLING, "db_pool_size": POOL_SIZE, "db_pool_timeout_s": 0.5,
                       "budget_plans": {plan: {"db_connections": 2, "db_connection_wait_ms": 0}
                                        for plan in ("free", "pro")}})


def test_tenant_over_its_connections_gets_429_and_the_other_tenant_is_answered(small_pool_app, tokens) -> None:
    client = small_pool_app.test_client()
    marker = f"dbcap-{uuid.uuid4().hex[:8]}"
    with HeldConnections(small_pool_app, ALICE_CLAIMS, POOL_SIZE) as held:
        # Tenant 1 tries to take the whole pool; its plan stops it at 2.
        assert held.held == 2 and held.refusal is not None and held.refusal.status == 429
        refused = client.get("/data/products?select=id", headers=auth(tokens["bob"]))
        assert refused.status_code == 429, refused.get_data(as_text=True)
        assert refused.headers["Retry-After"] == "1"
        body = refused.get_json()
        assert set(body) == {"code", "message", "details", "hint"}
        assert body["details"]["budget"] == "db_connections" and body["details"]["plan"] == "free"
        assert body["details"]["limit"] == 2
        write = client.post("/data/products", json={"name": marker, "price": 1}, headers=auth(tokens["alice"]))
        assert write.status_code == 429, write.get_data(as_text=True)
        # Tenant 2 is answered while tenant 1's connections are still held:
        # the pool's third connection was left to it.
        answered = client.get("/data/products?select=id", headers=auth(tokens["charlie"]))
        assert answered.status_code == 200, answered.get_data(as_text=True)
    # Released: tenant 1 is served again, and the refused write wrote nothing.
    after = client.get(f"/data/products?name=eq.{marker}", headers=auth(tokens["alice"]))
    assert after.status_code == 200 and after.get_json() == []


def test_a_tenant_at_its_share_waits_for_its_own_connection_only(app_config, tokens) -> None:
    """With a wait (the plan's db_connection_wait_ms, 30 s here so the test
    cannot race it), a request of a tenant holding its share is served as
    soon as one of its own connections is given back, and another tenant
    is served meanwhile."""
    from gateway.app import create_app

    app = create_app({**app_config, **NO_FUNCTION_POOLING, "db_pool_size": POOL_SIZE, "db_pool_timeout_s": 0.5,
                      "budget_plans": {plan: {"db_connections": 2, "db_connection_wait_ms": 30_000}
                                       for plan in ("free", "pro")}})
    counter = app.extensions["apprun.budgets"].counter("db_connections")
    waiting: dict[str, Any] = {}
    with HeldConnections(app, ALICE_CLAIMS, 1) as first, HeldConnections(app, ALICE_CLAIMS, 1):
        assert counter.held(TENANT_1) == 2
        waiter = threading.Thread(target=lambda: waiting.update(response=app.test_client().get(
            "/data/products?select=id", headers=auth(tokens["bob"]))))
        waiter.start()
        deadline = time.monotonic() + HOLD_DEADLINE_S
        while counter.waiting(TENANT_1) != 1:
            assert waiter.is_alive() and time.monotonic() < deadline, f"bob's request did not wait: {waiting}"
            time.sleep(0.01)
        answered = app.test_client().get("/data/products?select=id", headers=auth(tokens["charlie"]))
        assert answered.status_code == 200, answered.get_data(as_text=True)
        assert counter.waiting(TENANT_1) == 1 and "response" not in waiting  # still waiting for tenant 1's own
        first.release()  # one of tenant 1's connections comes back
        waiter.join(HOLD_DEADLINE_S)
    assert waiting["response"].status_code == 200, waiting["response"].get_data(as_text=True)


def test_slots_are_given_back_when_the_transaction_fails(small_pool_app) -> None:
    for _ in range(3):  # more failures than the budget: a leaked slot would refuse the next one
        with small_pool_app.app_context(), small_pool_app.test_request_context("/"), \
                pytest.raises(psycopg2.errors.DivisionByZero), tenant_transaction(ALICE_CLAIMS) as cur:
            cur.execute("SELECT 1 / 0")
    with HeldConnections(small_pool_app, ALICE_CLAIMS, POOL_SIZE) as held:
        assert held.held == 2


def test_a_request_admitted_once_is_not_refused_halfway(small_pool_app) -> None:
    """A request's later transactions (the workflow start's run_id after
    Temporal started it, an upload's row after its bytes) are counted but
    never refused: a 429 then would leave half of its work done."""
    counter = small_pool_app.extensions["apprun.budgets"].counter("db_connections")
    with small_pool_app.app_context(), small_pool_app.test_request_context("/"):
        with tenant_transaction(ALICE_CLAIMS, single_statement=True) as cur:  # admitted: the tenant had room
            cur.execute("SELECT 1")
        with HeldConnections(small_pool_app, ALICE_CLAIMS, POOL_SIZE) as held:
            assert held.held == 2 and held.refusal is not None  # a new request of the tenant is refused
            with tenant_transaction(ALICE_CLAIMS, single_statement=True) as cur:  # this one's second is not
                assert counter.held(TENANT_1) == 3
                cur.execute("SELECT 1")
                assert cur.fetchone() == (1,)
        assert counter.held(TENANT_1) == 0


def test_budgets_off_leave_the_pool_unlimited_and_the_other_tenant_waits(app_config, tokens) -> None:
    """The unfair reference: without budgets tenant 1 takes every connection
    and tenant 2 gets the pool's 503 (what the budget prevents)."""
    from gateway.app import create_app

    app = create_app({**app_config, **NO_FUNCTION_POOLING, "db_pool_size": POOL_SIZE, "db_pool_timeout_s": 0.5,
                      "budgets_enabled": False,
                      "budget_plans": {"free": {"db_connections": 1}}})
    with HeldConnections(app, ALICE_CLAIMS, POOL_SIZE) as held:
        assert held.held == POOL_SIZE
        starved = app.test_client().get("/data/products?select=id", headers=auth(tokens["charlie"]))
        assert starved.status_code == 503 and starved.get_json()["code"] == "db_pool_exhausted"


def test_background_work_takes_no_tenant_slot(small_pool_app) -> None:
    """The storage sweeper runs in an app context, not a request: a busy
    tenant's budget must not fail it."""
    with HeldConnections(small_pool_app, ALICE_CLAIMS, POOL_SIZE, request=False) as held:
        assert held.held == POOL_SIZE


# -- the plan's statement timeout ------------------------------------------------
@pytest.fixture(scope="module")
def timeout_app(app_config):
    from gateway.app import create_app

    return create_app({**app_config, **NO_FUNCTION_POOLING, "budget_plans": {"free": {"db_statement_timeout_ms": 200}}})


def test_plan_statement_timeout_applies_to_the_tenants_queries_only(timeout_app) -> None:
    default = timeout_app.config["APPRUN_SETTINGS"].db_statement_timeout_ms
    with timeout_app.test_request_context("/"):
        for single_statement in (True, False):
            with tenant_transaction(ALICE_CLAIMS, single_statement=single_statement) as cur:
                cur.execute("SELECT current_setting('statement_timeout')")
                assert cur.fetchone()[0] == "200ms"
        with tenant_transaction(CHARLIE_CLAIMS, single_statement=True) as cur:  # pro: the pool's own
            cur.execute("SELECT setting::int FROM pg_settings WHERE name = 'statement_timeout'")
            assert cur.fetchone()[0] == default
        # The first statement after the claims, in the same message, is
        # cancelled (a 1 s sleep against the 200 ms budget).
        with pytest.raises(psycopg2.errors.QueryCanceled), \
                tenant_transaction(ALICE_CLAIMS, single_statement=True) as cur:
            cur.execute("SELECT pg_sleep(1)")
        # The timeout was local to the transaction: the pooled connection
        # is back to the gateway's default.
        with plain_cursor() as cur:
            cur.execute("SELECT setting::int FROM pg_settings WHERE name = 'statement_timeout'")
            assert cur.fetchone()[0] == default


# -- the plans' validation -------------------------------------------------------
def test_a_plan_may_not_hold_the_whole_pool() -> None:
    with pytest.raises(SettingsError, match="db_connections is 20.*from 1 to APPRUN_DB_POOL_SIZE - 1 = 19"):
        plan_budgets(Settings.from_mapping({"budget_plans": {"pro": {"db_connections": 20}}}))
    with pytest.raises(SettingsError, match="'free': db_connections is None"):
        plan_budgets(Settings.from_mapping({"budget_plans": {"free": {"db_connections": None}}}))
    with pytest.raises(SettingsError, match="'free': db_connections is 12.*= 9"):  # the default, in a smaller pool
        plan_budgets(Settings.from_mapping({"db_pool_size": 10}))
    with pytest.raises(SettingsError, match="APPRUN_DB_POOL_SIZE=1 cannot be shared between tenants"):
        plan_budgets(Settings.from_mapping({"db_pool_size": 1}))
    with pytest.raises(SettingsError, match="db_connection_wait_ms must be a number"):
        plan_budgets(Settings.from_mapping({"budget_plans": {"pro": {"db_connection_wait_ms": None}}}))
    with pytest.raises(SettingsError, match="db_statement_timeout_ms must be >= 1"):
        plan_budgets(Settings.from_mapping({"budget_plans": {"free": {"db_statement_timeout_ms": 0}}}))
    # Budgets off: nothing to hold to, any pool size goes.
    assert plan_budgets(Settings.from_mapping({"db_pool_size": 1, "budgets_enabled": False}))
    assert plan_budgets(Settings.from_mapping({"db_pool_size": 3, "budget_plans": {"free": {"db_connections": 2},
                                                                                   "pro": {"db_connections": 2}}}))


def test_the_default_plans_fit_the_default_pool() -> None:
    plans = plan_budgets(Settings.from_mapping({}))
    pool = Settings.from_mapping({}).db_pool_size
    assert all(1 <= limits["db_connections"] < pool for limits in plans.values())
