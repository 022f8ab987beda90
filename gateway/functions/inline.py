"""Which WASM calls run on the calling thread instead of the native pool.

Handing a call to the native pool and back costs more than a small call:
a lock and a wake-up on each side, and the GIL passed between the pool
thread and the gevent hub. Measured over HTTP with ``bench/cost.py``
(2026-11-24), the gateway spent 2.1-2.2 ms of CPU per ``price_tax`` invoke
through the pool and 1.3 ms running it on the hub. The WASM work itself is
about 80 us of that.

The hub must not be held by a long call, so a call runs inline only when
all of these hold:

* its module has run in the pool before and used at most ``fuel`` there.
  A new module's first call always goes to the pool, and a spinning
  function never leaves it;
* the inline attempt gets at most ``fuel`` (a small slice: 200,000 units,
  0.1-0.4 ms here) and an epoch deadline of two ticks. The deadline bounds
  the wall time whatever fuel says: a unit is ~2 ns in a tight loop and
  ~0.15 ns in ``memory.fill`` on this machine, page faults and a busy
  machine are outside it, and an operator may set a larger slice;
* an attempt cut by either limit is thrown away and the call runs again
  from the start in the pool, under its full limits. Every call starts
  from a fresh store and modules import nothing, so a second run sees
  exactly what the first did. The module then never runs inline again in
  this process: an input that makes it slow cannot stall the hub twice.

A caller sees the same answer, fuel figure and errors either way. The only
cost of a cut attempt is the time it spent, which its tenant is charged.
"""
from __future__ import annotations

import threading
import weakref

from gateway.functions.sandbox import PreparedModule

#: Epoch ticks an inline attempt may run: two, so that a call of a few
#: microseconds that happens to straddle one tick is never cut.
INLINE_TICKS = 2
#: Where a call ran, as the runtime reports it (``on_placed``) and /metrics counts it.
INLINE, POOL, INLINE_CUT = "inline", "pool", "inline_cut"
PLACEMENTS = (INLINE, POOL, INLINE_CUT)


class InlineCalls:
    """What this process has learnt about each module: not yet seen in the
    pool, small enough to run inline, or never again inline."""

    def __init__(self, fuel: int) -> None:
        if fuel <= 0:
            raise ValueError("the inline fuel slice must be positive")
        self.fuel = fuel
        self.ticks = INLINE_TICKS
        self._lock = threading.Lock()
        # Keyed by the module object: a module evicted from the runtime's
        # cache and loaded again starts unknown, and nothing here keeps it alive.
        self._eligible: weakref.WeakKeyDictionary[PreparedModule, bool] = weakref.WeakKeyDictionary()

    def eligible(self, module: PreparedModule) -> bool:
        with self._lock:
            return self._eligible.get(module, False)

    def observed_in_pool(self, module: PreparedModule, fuel_used: int) -> None:
        """A call ran to its end in the pool: a module whose calls fit the
        slice may run inline next time, unless an attempt was cut before."""
        with self._lock:
            if module not in self._eligible and fuel_used <= self.fuel:
                self._eligible[module] = True

    def cut(self, module: PreparedModule) -> None:
        """An inline attempt ran out of its slice: the pool from now on."""
        with self._lock:
            self._eligible[module] = False
