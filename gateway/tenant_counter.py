"""How many of something each tenant holds at once, against a limit.

One counter serves every per-tenant concurrency budget: the WASM pool's
call slots (``gateway.functions.fairness``) and the database share and
activity slots (``gateway.budgets``).  Its rules:

* a caller over its tenant's limit is refused at once, or after waiting at
  most ``wait_s`` for one of *its own tenant's* units to come back; a
  tenant never waits for another tenant, and a unit given back serves only
  its own tenant's waiters (the longest waiting first);
* a ``math.inf`` limit counts the unit but never refuses it;
* ``held(tenant)`` and ``waiting(tenant)`` show the counts (tests, metrics).

Any thread may give a unit back, a native one included: WASM slots are
given back by the native pool thread the moment the call's work ends (not
when the hub next resumes the caller, which under another tenant's burst
can be hundreds of ms later), database shares by greenlets.  A native
thread must not touch gevent objects, so the counts live under a native
lock (held for a few dict operations, never across a wait or a greenlet
switch), and a release wakes a waiting greenlet through its hub's
thread-safe callback (``loop.run_callback_threadsafe``, gevent's way for
another thread to wake a greenlet; ThreadPool delivers results the same
way), or directly when it runs on the hub's own thread.

A waiter costs nothing while it waits.  Waiters that polled instead (every
1 ms) cost the hub 10% / 13% / 43% of a core with 1 / 10 / 100 of them,
notified ones 0.1% / 0.2% / 1.1% (gevent, the 2-core dev machine), and under
a noisy tenant's burst of spinning calls polling for WASM slots was ~7 % of
the hub's busy time (py-spy ``--gil``, 2026-11-24).
"""
from __future__ import annotations

import _thread
import contextlib
import threading
import time
from collections import deque
from typing import Any

from gateway.native import gevent_patched, original


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


class TenantCounter:
    """Units held per tenant, waited for per tenant (see the module doc)."""

    def __init__(self) -> None:
        self._lock = original("_thread", "allocate_lock", _thread.allocate_lock)()
        self._held: dict[str, int] = {}
        self._waiting: dict[str, int] = {}
        # Per tenant with waiters: their wake-ups, longest waiting first.
        self._lines: dict[str, deque[_Wakeup]] = {}

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
                    self._wait(tenant, remaining)
                    # Look again even when the wait timed out: a unit that came
                    # back just then is this waiter's.
                    if self._take(tenant, limit):
                        return True
            finally:
                self._waiting[tenant] -= 1
                if not self._waiting[tenant]:
                    del self._waiting[tenant]
                    self._lines.pop(tenant, None)

    def release(self, tenant: str) -> None:
        with self._lock:
            held = self._held.get(tenant, 0) - 1
            if held > 0:
                self._held[tenant] = held
            else:
                self._held.pop(tenant, None)
            line = self._lines.get(tenant)
            if line:
                line.popleft().set()

    def _wait(self, tenant: str, timeout_s: float) -> None:
        """Wait, with the lock released, until a release of ``tenant`` or
        the timeout; called with the lock held, returns with it held."""
        wakeup = _Wakeup()
        line = self._lines.setdefault(tenant, deque())
        line.append(wakeup)
        self._lock.release()
        try:
            wakeup.wait(timeout_s)
        finally:
            self._lock.acquire()
            with contextlib.suppress(ValueError):  # already taken off the line by a release
                line.remove(wakeup)

    # Reads without the lock: one dict lookup is atomic, and a count is only
    # ever a snapshot anyway.
    def held(self, tenant: str) -> int:
        return self._held.get(tenant, 0)

    def waiting(self, tenant: str) -> int:
        return self._waiting.get(tenant, 0)
