"""The hub's fair share (gateway/fair_share.py): a tenant over its share of
the requests in progress waits for an idle hub; the budgets' 429 when the
hub never gets idle; every admitted request is released when it ends."""
from __future__ import annotations

import gevent
import pytest

from gateway import fair_share
from gateway.budgets import Budgets, OverBudget
from gateway.fair_share import ACTIVE_FOR_S, MIN_IN_FLIGHT, FairShare
from gateway.settings import Settings
from tests.conftest import TENANT_1, TENANT_2, auth


class Waiter:
    """Records the waits; answers ``idle`` (False: the hub never got idle)."""

    def __init__(self, idle: bool = True) -> None:
        self.idle = idle
        self.calls: list[float] = []

    def __call__(self, max_s: float) -> bool:
        self.calls.append(max_s)
        return self.idle


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_tenant_over_its_share_of_the_requests_in_progress_waits() -> None:
    waiter = Waiter()
    share = FairShare(0.5, wait_for_idle=waiter, clock=Clock())
    for _ in range(2):
        assert not share.admit("quiet", 1).over_share
    # The noisy tenant's first MIN_IN_FLIGHT requests never wait; beyond
    # that it is over its half of what is in progress.
    decisions = [share.admit("noisy", 1).over_share for _ in range(MIN_IN_FLIGHT + 3)]
    assert decisions == [False] * MIN_IN_FLIGHT + [True] * 3
    assert waiter.calls == [0.5] * 3
    # The quiet tenant, under its share, still goes first.
    assert not share.admit("quiet", 1).over_share
    assert share.pause("noisy").over_share and not share.pause("quiet").over_share


def test_the_only_active_tenant_never_waits_and_weights_split_the_share() -> None:
    share = FairShare(1.0, wait_for_idle=Waiter(), clock=Clock())
    assert not any(share.admit("alone", 1).over_share for _ in range(20))
    # Weight 3 against 1: the heavy tenant may hold three quarters.
    weighted = FairShare(1.0, wait_for_idle=Waiter(), clock=Clock())
    for _ in range(5):
        weighted.admit("light", 1)
    assert not any(weighted.admit("heavy", 3).over_share for _ in range(15))  # 15 of 20 = its 3/4
    assert weighted.admit("heavy", 3).over_share
    assert weighted.share_of("heavy") == pytest.approx(21 * 3 / 4)


def test_a_quiet_tenant_between_requests_still_holds_its_share() -> None:
    """A tenant with no request in progress stays active for ACTIVE_FOR_S:
    a noisy tenant must not count as the only one between its requests."""
    clock = Clock()
    share = FairShare(1.0, wait_for_idle=Waiter(), clock=clock)
    share.admit("quiet", 1)
    share.release("quiet")
    assert [share.admit("noisy", 1).over_share for _ in range(MIN_IN_FLIGHT + 1)][-1]
    clock.now += ACTIVE_FOR_S + 0.2
    assert not share.admit("noisy", 1).over_share  # the quiet tenant left the table
    assert share.active_tenants() == {"noisy"}


def test_release_ends_the_count_and_a_killed_wait_is_not_counted() -> None:
    share = FairShare(1.0, wait_for_idle=Waiter(), clock=Clock())
    for _ in range(3):
        share.admit("a", 1)
    for _ in range(5):  # more releases than admissions change nothing
        share.release("a")
    assert share.in_flight("a") == 0 and share.share_of("a") == 0.0

    def killed(_max_s: float) -> bool:
        raise gevent.GreenletExit

    dying = FairShare(1.0, wait_for_idle=killed, clock=Clock())
    dying.admit("quiet", 1)
    for _ in range(MIN_IN_FLIGHT):
        dying.admit("noisy", 1)
    with pytest.raises(gevent.GreenletExit):
        dying.admit("noisy", 1)
    assert dying.in_flight("noisy") == MIN_IN_FLIGHT


def test_the_wait_lets_the_other_ready_greenlets_run_first(monkeypatch) -> None:
    """The real waiter, on a real hub: a greenlet that waits for an idle hub
    runs after every other greenlet that had work ready; with none, at once."""
    monkeypatch.setattr(fair_share, "gevent_patched", lambda: True)
    order: list[str] = []

    def busy(name: str) -> None:
        for step in range(3):
            order.append(f"{name}{step}")
            gevent.sleep(0)

    def polite() -> None:
        assert fair_share.wait_for_hub_idle(1.0)
        order.append("polite")

    gevent.joinall([gevent.spawn(polite), gevent.spawn(busy, "a"), gevent.spawn(busy, "b")], timeout=5)
    assert order[-1] == "polite" and len(order) == 7
    # Nothing else to run: the wait returns without using its time.
    started = gevent.get_hub().loop.now()
    assert fair_share.wait_for_hub_idle(1.0) and gevent.get_hub().loop.now() - started < 0.5
    # A hub that never gets idle: the wait gives up after its time.

    def spinner() -> None:
        while True:
            gevent.sleep(0)

    spinning = gevent.spawn(spinner)
    try:
        assert fair_share.wait_for_hub_idle(0.05) is False
    finally:
        spinning.kill()


def test_waiters_get_the_idle_hub_one_at_a_time(monkeypatch) -> None:
    """Each idle turn of the loop wakes one waiter: work that becomes ready
    meanwhile (a quiet tenant's request) runs before the next waiter, not
    after all of them (gevent.idle woke them all in the same turn)."""
    monkeypatch.setattr(fair_share, "gevent_patched", lambda: True)
    wait = fair_share.HubIdleTurns()
    order: list[str] = []

    def waiter(name: str) -> None:
        assert wait(1.0)
        order.append(name)
        gevent.spawn(order.append, f"{name} arrival")  # ready work behind this step

    gevent.joinall([gevent.spawn(waiter, f"w{n}") for n in range(3)], timeout=5)
    gevent.sleep(0)
    assert order == ["w0", "w0 arrival", "w1", "w1 arrival", "w2", "w2 arrival"]


def test_a_waiter_that_gives_up_leaves_the_line(monkeypatch) -> None:
    monkeypatch.setattr(fair_share, "gevent_patched", lambda: True)
    wait = fair_share.HubIdleTurns()

    def spinner() -> None:
        while True:
            gevent.sleep(0)

    spinning = gevent.spawn(spinner)
    try:
        assert wait(0.05) is False
    finally:
        spinning.kill()
    # The next waiter is not stuck behind the one that left.
    started = gevent.get_hub().loop.now()
    assert wait(1.0) and gevent.get_hub().loop.now() - started < 0.5


def settings(**values) -> Settings:
    return Settings.from_mapping(values)


def test_budgets_refuse_with_429_when_the_hub_never_gets_idle() -> None:
    budgets = Budgets(settings(), load_plan=lambda _t: "free")
    budgets.fair_share.wait_for_idle = Waiter(idle=False)
    assert budgets.admit_share(TENANT_2)
    for _ in range(MIN_IN_FLIGHT):
        assert budgets.admit_share(TENANT_1)
    with pytest.raises(OverBudget) as refused:
        budgets.admit_share(TENANT_1)
    assert refused.value.status == 429 and refused.value.details["budget"] == "fair_share"
    assert refused.value.details["plan"] == "free" and refused.value.headers["Retry-After"] == "1"
    assert budgets.fair_share.in_flight(TENANT_1) == MIN_IN_FLIGHT  # the refused one is not in progress


def test_null_weight_or_budgets_off_never_count_or_wait() -> None:
    unweighted = Budgets(settings(budget_plans={"free": {"share_weight": None}}), load_plan=lambda _t: "free")
    off = Budgets(settings(budgets_enabled=False), load_plan=lambda _t: "free")
    for budgets in (unweighted, off):
        budgets.fair_share.wait_for_idle = Waiter(idle=False)
        assert not any(budgets.admit_share(TENANT_1) for _ in range(20))
        budgets.pause_share(TENANT_1)
        assert budgets.fair_share.in_flight(TENANT_1) == 0


def test_each_wait_is_reported_with_its_point_and_outcome() -> None:
    clock = Clock()
    waits: list[tuple[str, bool, float]] = []

    def waiter(_max_s: float) -> bool:
        clock.now += 0.25
        return False

    share = FairShare(1.0, wait_for_idle=waiter, clock=clock, on_wait=lambda *wait: waits.append(wait))
    share.admit("quiet", 1)
    for _ in range(MIN_IN_FLIGHT + 1):
        share.admit("noisy", 1)
    share.pause("noisy")
    share.pause("quiet")  # under its share: no wait, nothing reported
    assert waits == [(fair_share.ADMIT, False, 0.25), (fair_share.TRANSACTION, False, 0.25)]


def _metric(text: str, series: str) -> float:
    return next(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(series + " "))


def test_metrics_count_the_fair_share_waits(app) -> None:
    """/metrics: apprun_fair_share_waits_total by point and outcome (every
    series present from the start), and the waits' durations."""
    client = app.test_client()
    refused = 'apprun_fair_share_waits_total{outcome="refused",point="admit"}'
    before = client.get("/metrics").get_data(as_text=True)
    assert _metric(before, 'apprun_fair_share_waits_total{outcome="went_on",point="transaction"}') >= 0
    budgets = app.extensions["apprun.budgets"]
    share = budgets.fair_share
    original = share.wait_for_idle
    share.wait_for_idle = Waiter(idle=False)
    admitted: list[str] = []
    try:
        for tenant in [TENANT_2] + [TENANT_1] * MIN_IN_FLIGHT:
            assert budgets.admit_share(tenant)
            admitted.append(tenant)
        with pytest.raises(OverBudget):
            budgets.admit_share(TENANT_1)
    finally:
        share.wait_for_idle = original
        for tenant in admitted:
            budgets.release_share(tenant)
    after = client.get("/metrics").get_data(as_text=True)
    assert _metric(after, refused) == _metric(before, refused) + 1
    assert _metric(after, 'apprun_fair_share_wait_seconds_count{point="admit"}') >= 1


def test_every_request_is_released_when_it_ends(app, tokens) -> None:
    """Admitted requests are counted until their end, whatever the answer:
    a count that leaked would soon make the tenant wait on every request."""
    client = app.test_client()
    share = app.extensions["apprun.budgets"].fair_share
    headers = auth(tokens["alice"])
    assert client.get("/data/products?select=id", headers=headers).status_code == 200
    assert client.get("/data/no_such_table", headers=headers).status_code == 404
    assert client.get("/data/products?select=nope(", headers=headers).status_code == 400
    assert client.post("/functions/absent/invoke", json={}, headers=headers).status_code == 404
    assert TENANT_1 in share.active_tenants()  # the requests were counted ...
    assert share.in_flight(TENANT_1) == 0  # ... and every one was released
