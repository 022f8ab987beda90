"""Long WASM calls give up their CPU priority while they run.

A tenant's budget bounds how much WASM time it may use (fairness.py), but
within that budget a spinning call still takes a core, and on a machine with
few cores that core is one the other tenants' requests need: the gateway's
hub, PostgreSQL and the other tenants' own short calls then wait their turn
behind it.  Nice values do not prevent that (a nice 10 thread still runs its
slice before a woken nice 0 thread gets the core), so a call that has run
longer than ``after_s`` is moved to ``SCHED_IDLE``: Linux then runs it only
on CPU nobody else wants and preempts it at once when another thread wakes.
Short calls, the common case, never change class.

When the call ends its thread is put back (``SCHED_OTHER`` at the pool's
nice value).  Leaving ``SCHED_IDLE`` needs ``CAP_SYS_NICE`` or a large
enough ``RLIMIT_NICE``; without either the thread cannot be restored, so it
reports itself as spent and the pool replaces it with a fresh thread.

The ticker thread that advances the WASM epoch (runtime.EpochTicker) is the
one that demotes: it already wakes every tick while a call runs.  Linux keeps
a scheduling policy per thread and ``sched_setscheduler`` takes a thread id.
"""
from __future__ import annotations

import _thread
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from gateway.native import original

log = logging.getLogger(__name__)

_get_native_id = original("_thread", "get_native_id", _thread.get_native_id)


@dataclass
class _RunningCall:
    started: float
    demoted: bool = False


def _set_idle(thread_id: int) -> None:
    os.sched_setscheduler(thread_id, os.SCHED_IDLE, os.sched_param(0))


def _set_normal(thread_id: int, nice: int) -> None:
    os.sched_setscheduler(thread_id, os.SCHED_OTHER, os.sched_param(0))
    os.setpriority(os.PRIO_PROCESS, thread_id, nice)


class LongCallDemotion:
    """``with demotion.call():`` around a call on a pool thread,
    ``demote_overdue()`` from the ticker thread.  ``on_spent()`` runs on a
    pool thread that could not be given its class back after its call."""

    def __init__(self, after_s: float, nice: int, on_spent: Callable[[], None],
                 set_idle: Callable[[int], None] = _set_idle,
                 set_normal: Callable[[int, int], None] = _set_normal,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.after_s = after_s
        self._nice = nice
        self._on_spent = on_spent
        self._set_idle = set_idle
        self._set_normal = set_normal
        self._clock = clock
        # A native lock: the pool threads and the ticker thread use it, never the hub.
        self._lock = original("_thread", "allocate_lock", _thread.allocate_lock)()
        self._running: dict[int, _RunningCall] = {}
        self.demoted_total = 0
        self._warned = False

    @contextmanager
    def call(self) -> Iterator[None]:
        thread_id = _get_native_id()
        running = _RunningCall(self._clock())
        with self._lock:
            self._running[thread_id] = running
        try:
            yield
        finally:
            with self._lock:
                del self._running[thread_id]
                demoted = running.demoted
            if demoted and not self._restore(thread_id):
                self._on_spent()

    def demote_overdue(self) -> None:
        """Move every call that has run for ``after_s`` or more to SCHED_IDLE."""
        now = self._clock()
        with self._lock:
            overdue = [(thread_id, call) for thread_id, call in self._running.items()
                       if not call.demoted and now - call.started >= self.after_s]
            for thread_id, call in overdue:
                try:
                    self._set_idle(thread_id)
                except OSError as exc:  # e.g. a seccomp profile forbids it: the call keeps its class
                    self._warn_once("cannot lower a long WASM call's CPU class: %s", exc)
                    continue
                call.demoted = True
                self.demoted_total += 1

    def _restore(self, thread_id: int) -> bool:
        try:
            self._set_normal(thread_id, self._nice)
            return True
        except OSError as exc:
            self._warn_once("a WASM thread cannot leave SCHED_IDLE (%s); such threads are replaced", exc)
            return False

    def _warn_once(self, message: str, exc: OSError) -> None:
        if not self._warned:
            self._warned = True
            log.warning(message, exc)
