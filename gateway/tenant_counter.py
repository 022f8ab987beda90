"""How many of something each tenant holds at once, against a limit.

One counter serves every per-tenant concurrency budget: the WASM pool's
call slots (``gateway.functions.fairness``) and the database share and
activity slots (``gateway.budgets``).  The rules they share live here once:

* a caller over its tenant's limit is refused at once, or after waiting at
  most ``wait_s`` for one of *its own tenant's* units to come back; a
  tenant never waits for another tenant, and a unit given back serves only
  its own tenant's waiters;
* a ``math.inf`` limit counts the unit but never refuses it;
* ``held(tenant)`` and ``waiting(tenant)`` show the counts (tests, metrics).

Only the way a waiter learns that a unit came back differs, because the two
sides give units back from different places:

* ``ThreadsafeNotifyingWait``: WASM slots are given back by the *native*
  pool thread the moment the call's work ends (not when the hub next
  resumes the caller, which under another tenant's burst can be hundreds of
  ms later).  A native thread must not touch gevent objects, so the counts
  live under a native lock (held for a few dict operations, never across a
  wait), and the release wakes the tenant's longest waiter through its
  hub's thread-safe callback (``loop.run_callback_threadsafe``, gevent's
  way for another thread to wake a greenlet; ThreadPool delivers results
  the same way).
* ``PollingWait`` did the same before by having each waiter look again
  every ``POLL_S``: under a noisy tenant's burst of spinning calls, its
  waiters' wake-ups were ~7 % of the hub's busy time (py-spy ``--gil``).
  Kept for comparison and as the fallback shape in the tests.
* ``NotifyingWait``: database shares are given back by greenlets only, so
  the release wakes the tenant's waiters through a (gevent-aware, under
  monkey patching) ``threading.Condition``: at once, and a waiter costs no
  CPU while it waits.  Polling here would cost every waiting request
  1000 wake-ups a second on the hub, and a tenant over its share may have
  many of them waiting: measured under gevent on the 2-core dev machine,
  1 / 10 / 100 polling waiters took 10% / 13% / 43% of a core, notified
  ones 0.1% / 0.2% / 1.1%; a polling waiter wakes about 1.3 ms (median)
  after a native thread gives a unit back, a notified one about 0.1 ms
  after a greenlet does.  Nobody waiting costs nothing either way.
"""
from __future__ import annotations

import _thread
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from gateway.native import gevent_patched, original

#: How often a polling waiter looks for a unit of its tenant.
POLL_S = 0.001


class Lock(Protocol):
    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...
    def release(self) -> None: ...
    def __enter__(self) -> bool: ...
    def __exit__(self, *exc_info: object) -> None: ...


class WaitStrategy(Protocol):
    """How a waiter waits for its tenant's units.  ``wait`` and ``wake``
    are called with ``lock`` held; ``wait`` releases it while it waits."""

    lock: Lock

    def wait(self, tenant: str, timeout_s: float) -> None: ...

    def wake(self, tenant: str) -> None: ...

    def forget(self, tenant: str) -> None: ...


def cooperative_sleep(seconds: float) -> None:
    """``time.sleep`` looked up at each call: gevent's once the process is
    monkey-patched (the waiting greenlet yields to the hub), the plain one
    otherwise, whichever was imported first."""
    time.sleep(seconds)


class PollingWait:
    """Releasable from any thread, a native one included: the release only
    changes the counts under a native lock, and waiters poll."""

    def __init__(self, sleep: Callable[[float], None] = cooperative_sleep, poll_s: float = POLL_S) -> None:
        self.lock: Lock = original("_thread", "allocate_lock", _thread.allocate_lock)()
        self._sleep = sleep
        self._poll_s = poll_s

    def wait(self, tenant: str, timeout_s: float) -> None:
        self.lock.release()
        try:
            self._sleep(min(self._poll_s, timeout_s))
        finally:
            self.lock.acquire()

    def wake(self, tenant: str) -> None:
        """Nothing to do: the waiters see the count on their next poll."""

    def forget(self, tenant: str) -> None:
        """Nothing is kept per tenant."""


class _Wakeup:
    """One waiter's event, settable from any thread: a greenlet's is set
    through its hub's thread-safe callback when the release runs on another
    thread; a plain thread's (no gevent) is a native event."""

    _get_ident = staticmethod(original("_thread", "get_ident", _thread.get_ident))

    def __init__(self) -> None:
        self._hub: Any = None
        if gevent_patched():
            import gevent
            from gevent.event import Event

            self._event: Any = Event()
            self._hub = gevent.get_hub()
            self._thread = self._get_ident()
        else:
            self._event = threading.Event()

    def wait(self, timeout_s: float) -> None:
        self._event.wait(timeout_s)

    def set(self) -> None:
        if self._hub is None or self._get_ident() == self._thread:
            self._event.set()
        else:
            self._hub.loop.run_callback_threadsafe(self._event.set)


class ThreadsafeNotifyingWait:
    """Releasable from any thread, a native one included, and a waiter costs
    nothing while it waits: the release wakes the tenant's longest waiter."""

    def __init__(self) -> None:
        self.lock: Lock = original("_thread", "allocate_lock", _thread.allocate_lock)()
        self._waiters: dict[str, deque[_Wakeup]] = {}

    def wait(self, tenant: str, timeout_s: float) -> None:
        wakeup = _Wakeup()
        line = self._waiters.setdefault(tenant, deque())
        line.append(wakeup)
        self.lock.release()
        try:
            wakeup.wait(timeout_s)
        finally:
            self.lock.acquire()
            with contextlib.suppress(ValueError):  # already taken off the line by a release
                line.remove(wakeup)

    def wake(self, tenant: str) -> None:
        line = self._waiters.get(tenant)
        if line:
            line.popleft().set()

    def forget(self, tenant: str) -> None:
        self._waiters.pop(tenant, None)


class NotifyingWait:
    """Released only from the waiters' own kind of thread (greenlets under
    gevent): a release notifies one waiter of its tenant."""

    def __init__(self) -> None:
        # threading's Lock and Condition are gevent's under monkey patching,
        # so a waiting greenlet yields to the hub.
        self.lock = threading.Lock()
        # One condition per tenant that has waiters, so a release wakes only
        # that tenant's.
        self._freed: dict[str, threading.Condition] = {}

    def wait(self, tenant: str, timeout_s: float) -> None:
        freed = self._freed.get(tenant)
        if freed is None:
            freed = self._freed[tenant] = threading.Condition(self.lock)
        freed.wait(timeout_s)

    def wake(self, tenant: str) -> None:
        freed = self._freed.get(tenant)
        if freed is not None:
            freed.notify()

    def forget(self, tenant: str) -> None:
        self._freed.pop(tenant, None)


class TenantCounter:
    """Units held per tenant, waited for per tenant (see the module doc)."""

    def __init__(self, strategy: WaitStrategy) -> None:
        self._strategy = strategy
        self._lock = strategy.lock
        self._held: dict[str, int] = {}
        self._waiting: dict[str, int] = {}

    def _take(self, tenant: str, limit: float) -> bool:
        held = self._held.get(tenant, 0)
        if held >= limit:
            return False
        self._held[tenant] = held + 1
        return True

    def try_acquire(self, tenant: str, limit: float, wait_s: float = 0.0) -> bool:
        """One unit of ``tenant`` at once or within ``wait_s``; False when
        none of the tenant's own came back in time."""
        with self._lock:
            if self._take(tenant, limit):
                return True
            if wait_s <= 0:
                return False
            deadline = time.monotonic() + wait_s
            self._waiting[tenant] = self._waiting.get(tenant, 0) + 1
            try:
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._strategy.wait(tenant, remaining)
                    # Look again even when the wait timed out: a unit that came
                    # back just then is this waiter's.
                    if self._take(tenant, limit):
                        return True
            finally:
                self._waiting[tenant] -= 1
                if not self._waiting[tenant]:
                    del self._waiting[tenant]
                    self._strategy.forget(tenant)

    def release(self, tenant: str) -> None:
        with self._lock:
            held = self._held.get(tenant, 0) - 1
            if held > 0:
                self._held[tenant] = held
            else:
                self._held.pop(tenant, None)
            self._strategy.wake(tenant)

    # Reads without the lock: one dict lookup is atomic, and a count is only
    # ever a snapshot anyway.
    def held(self, tenant: str) -> int:
        return self._held.get(tenant, 0)

    def waiting(self, tenant: str) -> int:
        return self._waiting.get(tenant, 0)
