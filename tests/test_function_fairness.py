"""Tenant fairness for WASM calls (issue 13): per-tenant concurrency and
time budgets, 429 with Retry-After for the tenant over budget, and another
tenant's calls never queued behind it."""
from __future__ import annotations

import threading
import time

import pytest
import requests

from gateway.errors import ApiError
from gateway.functions.fairness import (
    FunctionBudgets,
    PlanBudget,
    TimeBuckets,
    plan_budgets,
)
from gateway.settings import Settings, SettingsError
from tests.conftest import TENANT_1, TENANT_2, auth
from wasm.build import example_wasm

# Calls on the shared gateway start with the seed tenants out of WASM time debt.
pytestmark = pytest.mark.usefixtures("wasm_time_settled")

# Bound by time, not fuel: a chain of 16 dependent square roots costs about
# 21 fuel per iteration but hundreds of cycles, so 1e9 fuel lasts ~9 s here
# (4x the 2 s limit; bulk memory ops would not do, wasmtime charges them by
# the byte): the call always ends at its wall-clock limit.
_SQRT_CHAIN = "(f64.add (local.get $x) (f64.const 7.0))"
for _ in range(16):
    _SQRT_CHAIN = f"(f64.sqrt {_SQRT_CHAIN})"
TIME_SPIN = f'''(module (func (export "spin") (local $x f64)
  (loop (local.set $x {_SQRT_CHAIN}) (br 0))))'''
ALICE, CHARLIE = {"tenant_id": TENANT_1}, {"tenant_id": TENANT_2}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def budgets(clock: FakeClock, **plans: PlanBudget) -> FunctionBudgets:
    plans = plans or {"free": PlanBudget(1, 500, 1000), "pro": PlanBudget(2, 1000, 2000)}
    return FunctionBudgets(plans, plan_of=lambda claims: "pro" if claims is CHARLIE else "free",
                           queue_wait_ms=10, clock=clock)


def test_time_budget_refuses_with_a_truthful_retry_after() -> None:
    clock = FakeClock()
    limiter = budgets(clock)
    with limiter.admit(ALICE) as admission:
        admission.charge(2.5)  # 2500 ms against a 1000 ms burst at 500 ms/s
    with pytest.raises(ApiError) as refused, limiter.admit(ALICE):
        pass
    assert refused.value.status == 429 and refused.value.code == "function_time_budget"
    retry_after = int(refused.value.headers["Retry-After"])
    assert retry_after == 4  # 1500 ms of debt at 500 ms/s, rounded up
    with limiter.admit(CHARLIE):  # another tenant is not affected
        pass
    clock.now += retry_after - 1
    with pytest.raises(ApiError), limiter.admit(ALICE):
        pass
    clock.now += 1
    with limiter.admit(ALICE):
        pass


def test_a_spent_tenant_is_refused_before_the_call_does_any_work() -> None:
    clock = FakeClock()
    limiter = budgets(clock)
    limiter.refuse_if_spent(ALICE)                      # within budget: no refusal, nothing held
    with limiter.admit(ALICE) as admission:
        admission.charge(2.5)
    with pytest.raises(ApiError) as refused:
        limiter.refuse_if_spent(ALICE)
    assert refused.value.status == 429 and refused.value.code == "function_time_budget"
    assert int(refused.value.headers["Retry-After"]) >= 1
    limiter.refuse_if_spent(CHARLIE)                    # another tenant's budget is its own
    clock.now += 10
    limiter.refuse_if_spent(ALICE)                      # refilled


def test_a_call_that_could_only_wait_for_a_spent_budget_is_refused_at_once() -> None:
    """While the call holding a tenant's only slot has run longer than the
    tenant's bucket holds, the next call is refused at once with
    function_time_budget instead of waiting for the slot: the slot can only
    come back with a charge that empties the bucket.  Before that point,
    and for a plan refilled faster than its calls spend, it still waits."""
    clock = FakeClock()
    plans = {"free": PlanBudget(1, 2000, 1000), "pro": PlanBudget(1, 1000, 1000)}
    limiter = FunctionBudgets(plans, plan_of=lambda claims: "pro" if claims is CHARLIE else "free",
                              queue_wait_ms=50, clock=clock)
    with limiter.admit(CHARLIE):
        clock.now += 0.5                 # 500 ms run of 1000: its end could still leave time
        with pytest.raises(ApiError) as waited, limiter.admit(CHARLIE):
            pass
        assert waited.value.code == "function_concurrency_limit"      # it waited for the slot
        clock.now += 0.7                 # 1200 ms run: whenever it ends, the bucket is empty
        with pytest.raises(ApiError) as refused, limiter.admit(CHARLIE):
            pass
        assert refused.value.status == 429 and refused.value.code == "function_time_budget"
        assert refused.value.headers["Retry-After"] == "1"
        with limiter.admit(ALICE):       # another tenant's calls are not affected
            pass
    with limiter.admit(ALICE):
        clock.now += 1.5                 # free here refills 2000 ms/s: a call may end with time left
        with pytest.raises(ApiError) as waited, limiter.admit(ALICE):
            pass
        assert waited.value.code == "function_concurrency_limit"
    clock.now += 10
    with limiter.admit(CHARLIE):         # the slot and the bucket came back
        pass


def test_time_buckets_refill_only_to_the_burst() -> None:
    clock = FakeClock()
    buckets, budget = TimeBuckets(clock), PlanBudget(1, 100, 300)
    buckets.charge("t", budget, 300)
    assert buckets.retry_after_s("t", budget) == 1
    clock.now += 3600  # an idle hour saves up no more than the burst
    buckets.charge("t", budget, 300)
    assert buckets.retry_after_s("t", budget) == 1


def test_concurrency_cap_is_per_tenant() -> None:
    limiter = budgets(FakeClock())
    with limiter.admit(CHARLIE), limiter.admit(CHARLIE):
        with pytest.raises(ApiError) as refused, limiter.admit(CHARLIE):
            pass
        assert refused.value.code == "function_concurrency_limit" and refused.value.headers["Retry-After"] == "1"
        with limiter.admit(ALICE):  # alice's slot is hers alone
            pass
    with limiter.admit(CHARLIE):  # released on the way out
        pass


def test_a_slot_is_free_once_the_native_work_ends_not_when_the_caller_resumes() -> None:
    """The worker thread gives the slot back (``release``) the moment the
    call's work ends.  The calling greenlet may resume much later when the
    hub is busy with another tenant's burst; until then the tenant's next
    call must not be refused for a slot nobody uses."""
    limiter = budgets(FakeClock())
    with limiter.admit(ALICE) as admission:      # alice's plan allows 1 call at once
        worker = threading.Thread(target=admission.release)   # as the native thread does
        worker.start()
        worker.join()
        assert limiter.slots.held(TENANT_1) == 0
        with limiter.admit(ALICE):               # admitted while the first block is still open
            assert limiter.slots.held(TENANT_1) == 1
    assert limiter.slots.held(TENANT_1) == 0     # each slot given back once, not twice


def test_the_invoke_gives_the_slot_back_on_its_thread_also_when_the_call_fails() -> None:
    from gateway.functions.runtime import _timed

    done: list[str] = []

    def fails() -> None:
        raise ValueError("trap")

    outcome, seconds = _timed(fails, on_native_done=lambda spent: done.append((threading.current_thread().name,
                                                                                spent)))
    assert isinstance(outcome, ValueError) and seconds >= 0
    assert done == [(threading.current_thread().name, seconds)]   # with the time to charge before the slot


def test_a_slot_that_comes_back_after_a_wait_brings_its_calls_charge() -> None:
    """The native thread charges a call before it gives the slot back, and
    a caller that waited for that slot is refused when the charge emptied
    the bucket: a tenant with always one call waiting could otherwise run
    call after call past its WASM time budget."""
    clock = FakeClock()
    limiter = FunctionBudgets({"free": PlanBudget(1, 500, 1000)}, plan_of=lambda claims: "free",
                              queue_wait_ms=10_000, clock=clock)
    outcome: list[str] = []

    def second_call() -> None:
        try:
            with limiter.admit(ALICE):
                outcome.append("admitted")
        except ApiError as refused:
            outcome.append(refused.code)

    with limiter.admit(ALICE) as first:
        waiter = threading.Thread(target=second_call)
        waiter.start()
        while not limiter.slots.waiting(TENANT_1) and waiter.is_alive():   # it waits for the slot ...
            time.sleep(0.001)
        assert waiter.is_alive(), outcome
        first.charge(2.0)                            # ... which comes back with 2 s charged (1 s burst)
        first.release()
        waiter.join()
    assert outcome == ["function_time_budget"]
    assert limiter.slots.held(TENANT_1) == 0


def test_unknown_plan_gets_the_free_budget() -> None:
    limiter = FunctionBudgets({"free": PlanBudget(1, 500, 1000)}, plan_of=lambda claims: "enterprise",
                              queue_wait_ms=10, clock=FakeClock())
    assert limiter.budget_for(ALICE) == PlanBudget(1, 500, 1000)


def test_no_plan_may_hold_the_whole_pool() -> None:
    with pytest.raises(SettingsError):
        plan_budgets(Settings(function_threads=4, function_concurrency_pro=4))
    assert plan_budgets(Settings())["pro"].concurrency < Settings().function_threads


def invoke(gateway_url: str, token: str, name: str, body: dict) -> requests.Response:
    return requests.post(f"{gateway_url}/functions/{name}/invoke", json=body, headers=auth(token), timeout=30)


def deploy(gateway_url: str, token: str, name: str, body: bytes | str, content_type: str, query: str = "") -> None:
    response = requests.put(f"{gateway_url}/functions/{name}{query}", data=body, timeout=30,
                            headers=auth(token, **{"Content-Type": content_type}))
    assert response.status_code in (200, 201), response.text


def test_spinning_tenant_gets_429_and_never_queues_another(gateway_url, tokens) -> None:
    """The attack of issue 13: charlie starts as many calls as the pool has
    threads, each spinning until its 2 s limit.  His share admits
    ``function_concurrency_pro`` of them and the rest get 429; while his
    admitted calls run, alice's calls complete (not queued behind them).
    Once they end his time budget is spent: 429 with a Retry-After, after
    which he may call again.  Without budgets, his calls fill the pool and
    alice waits for them."""
    settings = Settings()
    add = {"export": "add", "args": [2, 3]}
    deploy(gateway_url, tokens["alice"], "fair-add", example_wasm("add"), "application/wasm")
    deploy(gateway_url, tokens["charlie"], "fair-add", example_wasm("add"), "application/wasm")
    deploy(gateway_url, tokens["charlie"], "fair-spin", TIME_SPIN, "text/plain",
           f"?fuel=1000000000&timeout_ms={settings.function_timeout_ceiling_ms}")
    spins: list[requests.Response] = []
    spinners = [threading.Thread(target=lambda: spins.append(
        invoke(gateway_url, tokens["charlie"], "fair-spin", {"export": "spin", "args": []})))
        for _ in range(settings.function_threads)]
    for spinner in spinners:
        spinner.start()

    # Charlie's share is saturated once his own cheap call is refused for concurrency.
    deadline = time.monotonic() + 10
    while True:
        extra = invoke(gateway_url, tokens["charlie"], "fair-add", add)
        if extra.status_code == 429:
            break
        assert extra.status_code == 200 and time.monotonic() < deadline, (extra.text, [s.text for s in spins])
        time.sleep(0.02)
    assert extra.json()["code"] == "function_concurrency_limit" and extra.headers["Retry-After"] == "1"
    assert set(extra.json()) == {"code", "message", "details", "hint"}

    alice = [invoke(gateway_url, tokens["alice"], "fair-add", add) for _ in range(5)]
    charlie_still_spinning = sum(spinner.is_alive() for spinner in spinners) >= settings.function_concurrency_pro
    assert [r.status_code for r in alice] == [200] * 5 and all(r.json() == {"result": 5} for r in alice)
    # Alice was served while charlie's calls held their slots: she was not queued behind them.
    assert charlie_still_spinning

    for spinner in spinners:
        spinner.join(30)
    admitted = settings.function_concurrency_pro
    assert sorted(r.json()["code"] for r in spins) == sorted(
        ["function_timeout"] * admitted + ["function_concurrency_limit"] * (len(spinners) - admitted))

    # His admitted 2 s call spent more than his 1 s burst: refused until it refills.
    over = invoke(gateway_url, tokens["charlie"], "fair-add", add)
    assert over.status_code == 429 and over.json()["code"] == "function_time_budget", over.text
    retry_after = int(over.headers["Retry-After"])
    assert 1 <= retry_after <= 10
    # Refused before the route looks the function up: no transaction spent on it.
    missing = invoke(gateway_url, tokens["charlie"], "no-such-function", add)
    assert missing.status_code == 429 and missing.json()["code"] == "function_time_budget", missing.text
    assert invoke(gateway_url, tokens["alice"], "fair-add", add).status_code == 200
    time.sleep(retry_after)
    assert invoke(gateway_url, tokens["charlie"], "fair-add", add).status_code == 200
