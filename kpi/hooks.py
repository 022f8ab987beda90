"""What the personas call while they run: violation counters, request
timings and after-load steps.

Side-effect free on import (no Locust listeners, no Locust import): the
plugin wires these to Locust's events, the personas only record into them.
One collector per process; workers ship it to the master
(kpi/plugin.py, report_to_master).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kpi.collector import Collector
from kpi.tenants import refused_counter

collector = Collector()

# Run once the load is over, on the master or the local runner only, after
# the verdict and before the embedded stack stops.
_after_load_hooks: list[Callable[[Any], None]] = []


def after_load(hook: Callable[[Any], None]) -> Callable[[Any], None]:
    """Register ``hook(environment)`` to run when Locust quits, after the
    verdict.  Not at test_stop: in a distributed run the master fires
    test_stop *before* it tells the workers to quit, so work done there
    races their last requests (a cleanup there made a row vanish under a
    read-back and counted a false lost write)."""
    _after_load_hooks.append(hook)
    return hook


def after_load_hooks() -> list[Callable[[Any], None]]:
    return list(_after_load_hooks)


def record_violation(counter: str) -> None:
    """A correctness check failed: counted in the named KPI counter."""
    collector.count(int(time.time()), counter)


def record_request(method: str, name: str, response_time_ms: float, failed: bool,
                   latency_ms: float | None = None, tenant: str = "", status: int | None = None) -> None:
    """One request's service time (Locust's response_time) and its latency
    from when it was due (None: it had no due time; the service time), under
    its tenant's tag; a 429 answer is also counted for its tenant."""
    second = int(time.time())
    collector.request(second, method, name, response_time_ms, failed, latency_ms, tenant)
    if status == 429:
        collector.count(second, refused_counter(tenant))


def record_dropped(sends: int) -> None:
    """Sends that were due within the run but never made (dropped_iterations)."""
    if sends > 0:
        collector.count(int(time.time()), "dropped_iterations", sends)
