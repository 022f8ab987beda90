"""Under contention, the hub serves the tenants that ask less first.

Every request of a gateway process runs as a greenlet on one hub thread,
and the hub resumes ready greenlets first come, first served.  A tenant that
keeps many requests going fills that queue, and every other tenant's
request waits behind its work, even when each of its requests is within its
plan's budgets: in the noisy profile the quiet tenant's p95 went from 5 ms
to 87 ms during charlie's burst (docs/fairness-measurements.md, "What it
was: the hub's order and the sessions' CPU shares").

So each process counts every tenant's requests in progress and divides the
total among the tenants active in the last ``ACTIVE_FOR_S`` (with a request
in progress, or one that ended since), by their plan's ``share_weight``.
A request of a tenant above its share (and above ``MIN_IN_FLIGHT``) waits
until the hub has nothing else to run before its route starts and before
each of its database transactions, so the other tenants' ready work goes
first; the waiters get the idle hub one at a time (``HubIdleTurns``).
The wait is work-conserving: on a hub with time to spare it lasts one turn
of the loop per waiter, and the tenant may use all of that time.

Requests in progress, not requests per second: a burst from clients that
wait for their answers (Locust's users, most applications) slows down as
soon as it waits, so its rate over the last second fell below the quiet
tenant's every other second, and the two tenants took turns waiting (tried:
a one-second sliding count).  A tenant's requests in progress only grow
while it waits, so the decision holds for as long as the burst does.  A
quiet tenant stays active for a moment after its last request ended:
between its requests it often has none in progress, and a noisy tenant
that counted as the only one then started its work unhindered, which the
quiet tenant's next request found ahead of it on the hub (measured: the
noisy tenant waited in only half of its checks).

A request whose first wait lasts ``fair_share_wait_ms`` without the hub
ever being idle is refused (429, budget ``fair_share``): the process is
saturated, and this tenant is the one taking more than its share.  Later
waits of a request that has started never refuse, so no request stops half
done.  The counts are per process, like every rate budget.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.native import gevent_patched

#: A tenant with at most this many requests in progress never waits: at the
#: kpi profile's 510 req/s, tenant 1 (alice and bob, ~380 req/s at a median
#: of ~3 ms) has one or two going at a time, and it must not wait behind a
#: tenant with a few requests whenever the hub is busy.
MIN_IN_FLIGHT = 4

#: How long a tenant with no request in progress still counts as active.
#: Longer than the gap between a steady tenant's requests (a few ms at a
#: few hundred req/s), short enough that a tenant that went quiet no longer
#: holds a share a second later.
ACTIVE_FOR_S = 1.0
#: The inactive tenants are dropped at most this often (a scan of the table).
PRUNE_EVERY_S = 0.1

#: ``wait_for_idle(max_s)``: True once the hub had nothing else to run,
#: False after ``max_s`` without that.
IdleWaiter = Callable[[float], bool]
#: ``on_wait(point, idle, seconds)`` after each wait (gateway/metrics.py):
#: where it waited (ADMIT or TRANSACTION), whether it got an idle hub.
WaitRecorder = Callable[[str, bool, float], None]
ADMIT = "admit"              # before the request's route
TRANSACTION = "transaction"  # before a later database transaction


class HubIdleTurns:
    """Greenlets waiting for an idle hub, woken one per idle turn of its
    loop, first come first served.

    ``gevent.idle()`` wakes every waiter at the same idle turn: a noisy
    tenant's 20 waiting requests then ran their steps back to back, and a
    quiet request arriving meanwhile waited behind all of them (its server
    time's p95 went from 3 to 15-17 ms during charlie's burst while its
    median hardly moved).  One at a time, a request that arrives waits
    behind one step of the noisy tenant at most; on a hub with time to
    spare the line still drains at once, one loop turn per waiter."""

    def __init__(self) -> None:
        self._hub: Any = None
        self._watcher: Any = None
        self._line: deque[Any] = deque()

    def __call__(self, max_s: float) -> bool:
        """Block this greenlet until its turn on an idle hub: True; False
        after ``max_s`` without one.  Without gevent there is no hub: True."""
        if not gevent_patched():
            return True
        import gevent
        from gevent.hub import Waiter, get_hub

        hub = get_hub()
        if hub is not self._hub:  # first use, or a new hub (tests destroy theirs)
            self._hub, self._watcher, self._line = hub, hub.loop.idle(), deque()
        waiter = Waiter(hub)
        self._line.append(waiter)
        if not self._watcher.active:
            self._watcher.start(self._wake_next)
        try:
            with gevent.Timeout(max_s, False):
                waiter.get()
                return True
            return False
        finally:  # timed out or killed: it leaves the line
            if waiter in self._line:
                self._line.remove(waiter)
            if not self._line:
                self._watcher.stop()

    def _wake_next(self) -> None:
        """The idle watcher's callback, on the hub: the next in line runs."""
        if self._line:
            self._line.popleft().switch(True)
        if not self._line:
            self._watcher.stop()


#: The process's line (one hub serves every request of a gateway process).
wait_for_hub_idle: IdleWaiter = HubIdleTurns()


@dataclass
class Yielding:
    """What one check decided (the budgets and the tests read it)."""
    over_share: bool
    idle: bool = True


@dataclass
class FairShare:
    """``admit(tenant, weight)`` when a request starts (counts it, and may
    wait; ``idle=False`` in the answer: refuse it), ``pause(tenant)``
    before each later stretch of its work (may wait, never refuses),
    ``release(tenant)`` when it ends.  Only the hub's thread calls these."""

    wait_s: float
    wait_for_idle: IdleWaiter = wait_for_hub_idle
    clock: Callable[[], float] = time.monotonic
    on_wait: WaitRecorder | None = None
    _in_flight: dict[str, int] = field(default_factory=dict)
    _weights: dict[str, float] = field(default_factory=dict)  # the active tenants'
    _last_active: dict[str, float] = field(default_factory=dict)
    _total: int = 0
    _active_weight: float = 0.0
    _pruned_at: float = 0.0

    def in_flight(self, tenant_id: str) -> int:
        return self._in_flight.get(tenant_id, 0)

    def active_tenants(self) -> set[str]:
        """The tenants that share the hub now (in progress or recently)."""
        return set(self._weights)

    def share_of(self, tenant_id: str) -> float:
        """The tenant's share of the requests in progress now."""
        weight = self._weights.get(tenant_id, 0.0)
        return self._total * weight / self._active_weight if self._active_weight else 0.0

    def _over_share(self, tenant_id: str) -> bool:
        mine = self._in_flight.get(tenant_id, 0)
        if mine <= MIN_IN_FLIGHT:
            return False
        self._prune(self.clock())
        if self._active_weight <= self._weights.get(tenant_id, 0.0):
            return False  # the only active tenant
        return mine > self.share_of(tenant_id)

    def _prune(self, now: float) -> None:
        """Drop the tenants with nothing in progress for ACTIVE_FOR_S."""
        if now - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        gone = [tenant for tenant, seen in self._last_active.items()
                if seen < now - ACTIVE_FOR_S and tenant not in self._in_flight]
        for tenant in gone:
            del self._last_active[tenant]
            self._active_weight -= self._weights.pop(tenant)
        if not self._weights:
            self._active_weight = 0.0  # no float residue once nobody is left

    def admit(self, tenant_id: str, weight: float) -> Yielding:
        """Count a request of the tenant as in progress (``weight``: its
        plan's ``share_weight``); over its share, wait for an idle hub."""
        now = self.clock()
        self._prune(now)  # also here, so tenants that come and go leave the table
        previous = self._weights.get(tenant_id)
        if previous != weight:  # a new active tenant, or its plan changed
            self._weights[tenant_id] = weight
            self._active_weight += weight - (previous or 0.0)
        self._last_active[tenant_id] = now
        self._in_flight[tenant_id] = self._in_flight.get(tenant_id, 0) + 1
        self._total += 1
        try:
            return self._yield(tenant_id, ADMIT)
        except BaseException:  # killed while waiting: the caller never learns it was counted
            self.release(tenant_id)
            raise

    def pause(self, tenant_id: str) -> Yielding:
        """Before more work of an admitted request: over its share, the
        tenant waits for an idle hub (at most ``wait_s``), then goes on."""
        return self._yield(tenant_id, TRANSACTION)

    def release(self, tenant_id: str) -> None:
        """An admitted request ended (whatever its outcome)."""
        count = self._in_flight.get(tenant_id, 0)
        if count <= 0:
            return
        self._total -= 1
        self._last_active[tenant_id] = self.clock()
        if count == 1:
            del self._in_flight[tenant_id]
        else:
            self._in_flight[tenant_id] = count - 1

    def _yield(self, tenant_id: str, point: str) -> Yielding:
        if not self._over_share(tenant_id):
            return Yielding(over_share=False)
        started = self.clock()
        idle = self.wait_for_idle(self.wait_s)
        if self.on_wait is not None:
            self.on_wait(point, idle, self.clock() - started)
        return Yielding(over_share=True, idle=idle)
