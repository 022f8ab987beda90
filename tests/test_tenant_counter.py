"""The per-tenant counter behind every concurrency budget
(gateway/tenant_counter.py): the WASM pool's slots (polling, given back from
native threads) and the database share (notified, given back by greenlets).

The rules are checked with plain threads for both wait strategies; the
gevent cases (a waiting greenlet yields, a native thread gives a slot back
without touching gevent) run in a monkey-patched child process that
reports JSON, as tests/test_noisy_personas.py does."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.tenant_counter import TenantCounter

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 30.0  # generous: only reached when something is broken


@pytest.fixture()
def counter() -> TenantCounter:
    return TenantCounter()


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


class Waiter:
    """A thread that asks for one unit of ``tenant``, waiting up to
    ``DEADLINE_S``: ``join()`` is "served" when a release gave it one,
    "served at its deadline" when only its last look did (a release that
    woke nobody), else "refused"."""

    def __init__(self, counter: TenantCounter, tenant: str, limit: float) -> None:
        self.outcome: str | None = None
        self._thread = threading.Thread(target=self._wait, args=(counter, tenant, limit), daemon=True)
        self._thread.start()

    def _wait(self, counter: TenantCounter, tenant: str, limit: float) -> None:
        deadline = time.monotonic() + DEADLINE_S
        served = counter.try_acquire(tenant, limit, DEADLINE_S)
        self.outcome = ("refused" if not served else
                        "served" if time.monotonic() < deadline else "served at its deadline")

    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self) -> str | None:
        self._thread.join(2 * DEADLINE_S)
        assert self.done(), "the waiter is still waiting"
        return self.outcome


def test_refuses_over_the_limit_per_tenant_and_frees_on_release(counter: TenantCounter) -> None:
    assert counter.try_acquire("t2", 2) and counter.try_acquire("t2", 2)
    assert not counter.try_acquire("t2", 2)
    assert counter.try_acquire("t1", 2)  # another tenant is not affected
    assert (counter.held("t2"), counter.held("t1"), counter.waiting("t2")) == (2, 1, 0)
    counter.release("t2")
    assert counter.held("t2") == 1 and counter.try_acquire("t2", 2)
    for _ in range(3):
        counter.release("t2")
    assert counter.held("t2") == 0  # never negative


def test_an_infinite_limit_counts_but_never_refuses(counter: TenantCounter) -> None:
    assert all(counter.try_acquire("t", math.inf) for _ in range(1000))
    assert counter.held("t") == 1000
    assert not counter.try_acquire("t", 1000)  # the units count against a finite limit


def test_a_wait_that_times_out_is_refused_and_leaves_the_counts(counter: TenantCounter) -> None:
    assert counter.try_acquire("t", 1)
    assert not counter.try_acquire("t", 1, wait_s=0.05)
    assert (counter.held("t"), counter.waiting("t")) == (1, 0)


def test_a_waiter_is_served_by_its_own_tenants_release_only(counter: TenantCounter) -> None:
    assert counter.try_acquire("t1", 1) and counter.try_acquire("t2", 1)
    first, second = Waiter(counter, "t1", 1), Waiter(counter, "t2", 1)
    until(lambda: counter.waiting("t1") == 1 and counter.waiting("t2") == 1, "both tenants wait")
    counter.release("t2")
    assert second.join() == "served"
    # Tenant 2's unit went to tenant 2's waiter; tenant 1's waiter still waits for its own.
    assert not first.done() and counter.waiting("t1") == 1 and counter.held("t1") == 1
    counter.release("t1")
    assert first.join() == "served"
    assert (counter.held("t1"), counter.held("t2"), counter.waiting("t1"), counter.waiting("t2")) == (1, 1, 0, 0)


def test_one_release_serves_one_waiter(counter: TenantCounter) -> None:
    assert counter.try_acquire("t", 1)
    waiters = [Waiter(counter, "t", 1) for _ in range(2)]
    until(lambda: counter.waiting("t") == 2, "both calls wait")
    counter.release("t")
    until(lambda: sum(w.done() for w in waiters) == 1, "one waiter is served")
    assert counter.waiting("t") == 1 and counter.held("t") == 1
    counter.release("t")
    assert [w.join() for w in waiters] == ["served", "served"]


def test_a_counter_is_given_back_from_another_thread(counter: TenantCounter) -> None:
    assert counter.try_acquire("t", 1)
    waiter = Waiter(counter, "t", 1)
    until(lambda: counter.waiting("t") == 1, "the call waits")
    giver = threading.Thread(target=counter.release, args=("t",))
    giver.start()
    giver.join()
    assert waiter.join() == "served" and counter.held("t") == 1


GEVENT_SCRIPT = r'''
from gevent import monkey
monkey.patch_all()
import json, sys, time
import gevent
from gevent._hub_local import get_hub_if_exists
from gateway.native import native_sleep, start_native_thread
from gateway.tenant_counter import TenantCounter

release_on = sys.argv[1]
# Generous for a release that comes ~70 ms later, and short enough that a
# wait blocking the hub fails here in ~20 s instead of hanging.
WAIT_S = 10.0
counter = TenantCounter()
assert counter.try_acquire("t1", 1) and counter.try_acquire("t2", 1)
ticks = [0]
looks = {"t1": 0, "t2": 0}
counter_wait = counter._wait


def counted_wait(tenant, timeout_s):
    looks[tenant] += 1
    counter_wait(tenant, timeout_s)


counter._wait = counted_wait

def tick():
    while True:
        ticks[0] += 1
        gevent.sleep(0.001)

ticker = gevent.spawn(tick)


def ask(tenant):
    deadline = time.monotonic() + WAIT_S
    served = counter.try_acquire(tenant, 1, WAIT_S)
    return "refused" if not served else "served" if time.monotonic() < deadline else "served at its deadline"


waiter, other = gevent.spawn(ask, "t1"), gevent.spawn(ask, "t2")
while counter.waiting("t1") != 1 or counter.waiting("t2") != 1:
    assert not waiter.ready() and not other.ready(), "the waiters blocked the hub for their whole wait"
    gevent.sleep(0.001)
ticks_while_waiting = ticks[0]
gevent.sleep(0.05)
ticks_while_waiting = ticks[0] - ticks_while_waiting
hubs = []

def give_back():
    native_sleep()(0.02)  # the waiter is back to waiting, not mid-poll
    counter.release("t1")
    hubs.append(get_hub_if_exists() is not None)

if release_on == "native":
    start_native_thread(give_back, "give-back")
else:
    gevent.spawn(give_back)
served = waiter.get(timeout=2 * WAIT_S)
other_still_waiting = not other.ready() and counter.waiting("t2") == 1
counter.release("t2")
other_served = other.get(timeout=2 * WAIT_S)
ticker.kill()
print(json.dumps({"served": served, "other_still_waiting": other_still_waiting, "other_served": other_served,
                  "held": [counter.held("t1"), counter.held("t2")], "ticks_while_waiting": ticks_while_waiting,
                  "hub_on_release_thread": hubs, "looks": looks}))
'''


def run_under_gevent(release_on: str) -> dict:
    result = subprocess.run([sys.executable, "-c", GEVENT_SCRIPT, release_on], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("release_on", ["native", "greenlet"])
def test_under_gevent_a_waiter_yields_and_is_served_by_its_tenants_release(release_on: str) -> None:
    """A waiting greenlet leaves the hub to others (the ticker runs); the
    WASM side's native thread gives the slot back without creating a hub
    (it touches no gevent object); the release serves its own tenant only."""
    outcome = run_under_gevent(release_on)
    assert (outcome["served"], outcome["other_still_waiting"], outcome["other_served"]) == ("served", True, "served")
    assert outcome["held"] == [1, 1]
    assert outcome["ticks_while_waiting"] > 0
    assert outcome["hub_on_release_thread"] == [release_on == "greenlet"]
    # A waiter sleeps until its tenant's release (it does not poll): one look each.
    assert outcome["looks"] == {"t1": 1, "t2": 1}, outcome["looks"]
