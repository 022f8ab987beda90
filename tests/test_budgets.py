"""Tenant budgets: plans, token buckets, concurrency counters, 429 bodies."""
from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.budgets import (
    DEFAULT_PLAN_BUDGETS,
    Budgets,
    OverBudget,
    TokenBuckets,
    load_plan_from_database,
    plan_budgets,
)
from gateway.errors import error_response
from gateway.settings import Settings, SettingsError
from tests.conftest import NO_FUNCTION_POOLING, TENANT_1, TENANT_2


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def settings(**values: Any) -> Settings:
    return Settings.from_mapping(values)


# -- token buckets -------------------------------------------------------------
def test_bucket_allows_the_burst_then_refuses_with_the_wait() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(clock)
    assert [buckets.take("k", rate=2, burst=3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k", rate=2, burst=3) == pytest.approx(0.5)
    clock.now += 0.5
    assert buckets.take("k", rate=2, burst=3) == 0.0
    assert buckets.take("k", rate=2, burst=3) == pytest.approx(0.5)


def test_bucket_saves_no_more_than_the_burst() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(clock)
    buckets.take("k", rate=10, burst=2)
    clock.now += 3600
    assert [buckets.take("k", rate=10, burst=2) for _ in range(3)][-1] > 0


def test_buckets_are_independent_per_key() -> None:
    buckets = TokenBuckets(FakeClock())
    assert buckets.take(("t2", "data"), rate=1, burst=1) == 0.0
    assert buckets.take(("t2", "data"), rate=1, burst=1) > 0
    assert buckets.take(("t1", "data"), rate=1, burst=1) == 0.0
    assert buckets.take(("t2", "functions"), rate=1, burst=1) == 0.0


# -- concurrency ---------------------------------------------------------------
def test_concurrency_refuses_over_the_limit_and_frees_on_release() -> None:
    counter = Budgets(settings(), load_plan=lambda _t: "free").counter("db_connections")
    assert counter.try_acquire("t2", 2) and counter.try_acquire("t2", 2)
    assert not counter.try_acquire("t2", 2)
    assert counter.try_acquire("t1", 2)  # another tenant is not affected
    counter.release("t2")
    assert counter.held("t2") == 1 and counter.try_acquire("t2", 2)


def test_slot_raises_429_and_releases_after_errors() -> None:
    budgets = Budgets(settings(budget_plans={"pro": {"db_connections": 1}}), load_plan=lambda _t: "pro")
    with budgets.slot(TENANT_2, "db_connections"):
        with pytest.raises(OverBudget) as refused, budgets.slot(TENANT_2, "db_connections"):
            pass
        assert refused.value.status == 429 and refused.value.headers["Retry-After"] == "1"
    with pytest.raises(LookupError), budgets.slot(TENANT_2, "db_connections"):
        raise LookupError("the route failed")
    with budgets.slot(TENANT_2, "db_connections"):  # both slots were given back
        pass


def test_budgets_off_and_null_mean_unlimited() -> None:
    off = Budgets(settings(budgets_enabled=False, budget_plans={"free": {"data_rps": 0}}), load_plan=lambda _t: "free")
    unlimited = Budgets(settings(budget_plans={"free": {"data_rps": None}}), load_plan=lambda _t: "free")
    for budgets in (off, unlimited):
        for _ in range(100):
            budgets.take(TENANT_1, "data")


# -- plans ---------------------------------------------------------------------
def test_rate_follows_the_tenants_plan() -> None:
    plans = {TENANT_1: "free", TENANT_2: "pro"}
    budgets = Budgets(settings(budget_plans={"free": {"data_rps": 1, "data_burst": 1},
                                             "pro": {"data_rps": 1, "data_burst": 3}}),
                      load_plan=plans.get, clock=FakeClock())
    budgets.take(TENANT_1, "data")
    with pytest.raises(OverBudget) as refused:
        budgets.take(TENANT_1, "data")
    assert refused.value.details == {"budget": "data_rps", "plan": "free", "limit": 1, "retry_after_s": 1}
    for _ in range(3):
        budgets.take(TENANT_2, "data")


def test_plan_is_cached_for_the_ttl() -> None:
    clock = FakeClock()
    calls: list[str] = []
    current = {"plan": "free"}

    def load(tenant_id: str) -> str:
        calls.append(tenant_id)
        return current["plan"]

    budgets = Budgets(settings(budget_plan_cache_ttl_s=30), load_plan=load, clock=clock)
    assert budgets.plan_of(TENANT_1) == "free"
    current["plan"] = "pro"
    clock.now += 29
    assert budgets.plan_of(TENANT_1) == "free" and len(calls) == 1
    clock.now += 2
    assert budgets.plan_of(TENANT_1) == "pro" and len(calls) == 2


def test_unknown_plan_or_failed_lookup_uses_the_default_or_last_plan() -> None:
    clock = FakeClock()
    answers: list[Any] = ["enterprise", "pro", RuntimeError("database down")]

    def load(_tenant_id: str) -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    budgets = Budgets(settings(budget_plan_cache_ttl_s=1), load_plan=load, clock=clock)
    assert budgets.plan_of(TENANT_1) == "free"   # unknown plan name: the default plan
    clock.now += 2
    assert budgets.plan_of(TENANT_1) == "pro"
    clock.now += 2
    assert budgets.plan_of(TENANT_1) == "pro"    # the lookup failed: the last known plan stays


def test_overrides_merge_over_the_defaults_and_new_plans_start_from_the_default() -> None:
    plans = plan_budgets(settings(budget_plans=json.dumps({"pro": {"activity_slots": 3},
                                                           "enterprise": {"data_rps": None}})))
    assert plans["pro"]["activity_slots"] == 3
    assert plans["pro"]["data_rps"] == DEFAULT_PLAN_BUDGETS["pro"]["data_rps"]
    assert plans["enterprise"]["data_rps"] is None
    assert plans["enterprise"]["activity_slots"] == DEFAULT_PLAN_BUDGETS["free"]["activity_slots"]


@pytest.mark.parametrize("raw", ["{", "[]", '{"free": 3}', '{"free": {"data_rsp": 3}}',
                                 '{"free": {"data_rps": -1}}', '{"free": {"data_rps": "fast"}}'])
def test_bad_overrides_are_refused(raw: str) -> None:
    with pytest.raises(SettingsError):
        plan_budgets(settings(budget_plans=raw))


def test_unknown_default_plan_is_refused() -> None:
    with pytest.raises(SettingsError):
        plan_budgets(settings(budget_default_plan="gold"))


def test_over_budget_renders_as_postgrest_json_with_retry_after(app) -> None:
    with app.app_context():
        response = error_response(OverBudget("data_rps", "free", 5, 0.2))
    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    body = json.loads(response.get_data())
    assert set(body) == {"code", "message", "details", "hint"} and body["code"] == "over_budget"


# -- against the real database -------------------------------------------------
def test_plans_come_from_the_tenants_table(app) -> None:
    with app.app_context():
        assert load_plan_from_database(TENANT_1) == "free"
        assert load_plan_from_database(TENANT_2) == "pro"
        assert load_plan_from_database("33333333-3333-3333-3333-333333333333") is None


# -- the gateway's hooks -------------------------------------------------------
@pytest.fixture(scope="module")
def tight_app(app_config):
    """Tenant 1 (free) may send 3 data requests and start 1 workflow before
    the buckets refill (0.01/s: not within a test)."""
    from gateway.app import create_app

    return create_app({**app_config, **NO_FUNCTION_POOLING, "budget_plans": {"free": {"data_rps": 0.01, "data_burst": 3,
                                                               "workflow_starts_rps": 0.01,
                                                               "workflow_starts_burst": 1}}})


def test_tenant_over_its_data_rate_gets_429_and_others_do_not_wait(tight_app, tokens) -> None:
    from tests.conftest import auth

    client = tight_app.test_client()
    answers = [client.get("/data/products?select=id", headers=auth(tokens["alice"])).status_code for _ in range(3)]
    assert answers == [200, 200, 200]
    refused = client.get("/data/products?select=id", headers=auth(tokens["bob"]))  # same tenant, same bucket
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    body = refused.get_json()
    assert set(body) == {"code", "message", "details", "hint"} and body["details"]["budget"] == "data_rps"
    assert body["details"]["plan"] == "free"
    # Another tenant, another route family, and requests without a token are unaffected.
    assert client.get("/data/products?select=id", headers=auth(tokens["charlie"])).status_code == 200
    assert client.get("/auth/me", headers=auth(tokens["alice"])).status_code == 200
    assert client.get("/data/products").status_code == 401


def test_workflow_starts_have_their_own_budget(tight_app, tokens) -> None:
    from tests.conftest import auth

    client = tight_app.test_client()
    body = {"workflow": "user_registration", "input": {"email": "budget@test.com"}}
    headers = auth(tokens["alice"])
    assert client.post("/api/v1/workflows/execute", json={"workflow": "nope"}, headers=headers).status_code == 400
    assert client.post("/api/v1/workflows/execute", json=body, headers=headers).status_code == 202
    refused = client.post("/api/v1/workflows/execute", json=body, headers=headers)
    assert refused.status_code == 429 and refused.get_json()["details"]["budget"] == "workflow_starts_rps"
    assert client.post("/api/v1/workflows/execute", json=body, headers=auth(tokens["charlie"])).status_code == 202


def test_budgets_off_never_refuse(app_config, tokens) -> None:
    from gateway.app import create_app
    from tests.conftest import auth

    client = create_app({**app_config, **NO_FUNCTION_POOLING, "budgets_enabled": False,
                         "budget_plans": {"free": {"data_rps": 0.01, "data_burst": 1}}}).test_client()
    for _ in range(3):
        assert client.get("/data/products?select=id", headers=auth(tokens["alice"])).status_code == 200
    # One switch for every budget: the WASM budgets are off with the others.
    assert client.application.extensions["apprun.function_budgets"].enabled is False


def test_route_families() -> None:
    from gateway.budgets import route_family

    assert [route_family(p) for p in ("/data/products", "/functions", "/functions/x/invoke",
                                      "/api/v1/workflows/execute", "/api/v1/workflows", "/auth/me",
                                      "/storage/v1/object/b/k", "/healthz", "/api/v2/other", "/")] == \
        ["data", "functions", "functions", "workflows", "workflows", "auth", "storage", None, None, None]
