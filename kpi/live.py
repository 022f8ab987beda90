"""This process's run: its state and the figures judged from it.

The plugin, the load shapes and the web UI share this one RunState; the
functions here only read it (the judging itself is kpi/windows.py and
kpi/evaluate.py, pure)."""
from __future__ import annotations

import os
import time

from kpi import windows
from kpi.evaluate import Snapshot, Verdict, evaluate
from kpi.hooks import collector
from kpi.state import RunState
from kpi.tenants import NoisyRun
from kpi.thresholds import Thresholds
from kpi.validity import ValidityCheck

run = RunState()


def figures() -> windows.RunFigures:
    sampler = run.sampler
    burst = tuple(run.burst_window) if run.burst_window else None
    noisy = NoisyRun(run.noisy_tenant, burst) if run.noisy_tenant is not None else None  # type: ignore[arg-type]
    return windows.RunFigures(collector, sampler.samples if sampler is not None else (), run.preflight,
                              os.cpu_count() or 1, noisy)


def judged_window(thresholds: Thresholds) -> tuple[int, int]:
    started = run.started_at or time.time()
    return windows.judged_window(started, collector.first_second(int(started)), run.load_stopped_at,
                                 thresholds.warmup_s, time.time(), run.capacity_window)


def snapshot_now(thresholds: Thresholds) -> Snapshot:
    return windows.snapshot_between(figures(), *judged_window(thresholds))


def live_verdicts(thresholds: Thresholds) -> list[Verdict]:
    """The KPIs judged on the window so far; for a stress run, a rate its
    steps have not reached yet is undecided (kpi/windows.py unreached_rate),
    as in the final verdict."""
    if not run.started_at:
        return []
    return judged_verdicts(evaluate(snapshot_now(thresholds), thresholds))


def judged_verdicts(verdicts: list[Verdict]) -> list[Verdict]:
    """What a stress run's steps say about its rate, applied to ``verdicts``
    (other profiles: unchanged).  One rule for the KPIs tab and the exit code."""
    if run.profile != "stress":
        return verdicts
    return windows.unreached_rate(verdicts, run.steps, run.load_seconds(), run.load_stopped_at is not None)


def tenants_now(thresholds: Thresholds) -> list[dict]:
    """The per-tenant rows of the judged window so far (the KPIs tab)."""
    return windows.tenant_table(figures(), *judged_window(thresholds)) if run.started_at else []


def validity_now(thresholds: Thresholds) -> list[ValidityCheck]:
    return windows.validity_between(figures(), thresholds, *judged_window(thresholds)) if run.started_at else []


def decided_failures(verdicts: list[Verdict]) -> list[Verdict]:
    """The KPIs ``abort_on_fail`` may stop a run for: missed, with a figure,
    and decided.  A metric with intervals is not one before it has its
    interval (the burst's first seconds) nor while the interval holds its
    bound (kpi/uncertainty.py)."""
    return [v for v in verdicts
            if not v.passed and not v.undecided and not v.interval_missing and v.measured is not None]
