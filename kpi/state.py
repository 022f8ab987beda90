"""The run's state on the master (or the local runner): one typed object
instead of a dict of loose keys."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from kpi.baseline import Delta, regressions
from kpi.evaluate import Verdict, undecided_cause
from kpi.validity import ValidityCheck, breaches, cause


@dataclass
class RunState:
    started_at: float | None = None          # test_start (before the pre-flight)
    load_began_at: float | None = None       # the end of test_start (after the pre-flight): the load begins
    load_stopped_at: float | None = None     # test_stop
    preflight_running: bool = False
    preflight: dict[str, Any] = field(default_factory=dict)
    profile: str = ""                        # --load-profile of the current run
    run_time_s: float | None = None          # the run's length: --run-time, else its profile's (kpi/profiles.py)
    steps: list[dict[str, Any]] = field(default_factory=list)      # stress steps, judged
    # The index of the last stress step judged: kept across "Reset stats",
    # which forgets the steps but not the shape's clock.
    last_step: int = 0
    capacity_rps: float | None = None
    capacity_window: list[int] | None = None
    aborted: str | None = None
    verdicts: list[Verdict] = field(default_factory=list)
    validity: list[ValidityCheck] = field(default_factory=list)   # the judged window's budgets
    judged_window: tuple[int, int] | None = None
    resources: dict[str, dict[str, float]] = field(default_factory=dict)
    cost: dict[str, float | None] = field(default_factory=dict)     # stack CPU per request vs the floor
    latency: dict[str, dict[str, float | int | None]] = field(default_factory=dict)   # both timings, side by side
    dropped_iterations: int = 0
    totals: dict[str, float | None] = field(default_factory=dict)   # the whole run, from the same collector
    baseline_source: str = ""                # --baseline
    deltas: list[Delta] = field(default_factory=list)       # each KPI against the baseline
    sampler: Any = None                      # kpi.sampler.*Sampler of the current run
    tenants: list[dict[str, Any]] = field(default_factory=list)   # kpi/tenants.py rows, judged window
    noisy_tenant: str | None = None          # the noisy profile's bursting tenant (None: other profiles)
    burst_window: list[int] | None = None    # [start, end) epoch seconds of the noisy tenant's burst

    def begin_run(self, profile: str = "", run_time_s: float | None = None, now: float | None = None) -> None:
        """A new run (headless, or START in the web UI): forget the last one's figures."""
        self.started_at = time.time() if now is None else now
        self.profile, self.run_time_s, self.last_step = profile, run_time_s, 0
        self.load_stopped_at = self.load_began_at = None
        self.tenants, self.burst_window = [], None
        self.steps, self.capacity_rps, self.capacity_window, self.aborted = [], None, None, None
        self.verdicts, self.validity, self.judged_window, self.resources, self.cost = [], [], None, {}, {}
        self.latency, self.dropped_iterations, self.deltas, self.totals = {}, 0, [], {}

    def load_seconds(self, now: float | None = None) -> float:
        """How long the load has run (until it stopped), pre-flight excluded."""
        began = self.load_began_at or self.started_at
        if began is None:
            return 0.0
        return max(0.0, (self.load_stopped_at or (time.time() if now is None else now)) - began)

    @property
    def verdict(self) -> str:
        """One word for the whole run: INCONCLUSIVE (a validity budget was
        exceeded) whatever the KPIs say, else FAIL (a KPI missed beyond its
        interval, or worse than the baseline beyond a regression: limit),
        else INCONCLUSIVE (a KPI's interval holds its bound: kpi/uncertainty.py),
        else PASS."""
        if breaches(self.validity):
            return "INCONCLUSIVE"
        if any(not v.passed and not v.undecided for v in self.verdicts) or regressions(self.deltas):
            return "FAIL"
        return "INCONCLUSIVE" if any(v.undecided for v in self.verdicts) else "PASS"

    @property
    def inconclusive_reason(self) -> str:
        """What made the verdict INCONCLUSIVE, in words ('' when it is not)."""
        if self.verdict != "INCONCLUSIVE":
            return ""
        return "the measurement exceeded its budget" if breaches(self.validity) else "a KPI is undecided"

    @property
    def inconclusive_cause(self) -> str:
        """Why the verdict is INCONCLUSIVE ('' when it is not): the budget
        the measurement exceeded, else the KPIs too close to their bounds."""
        if self.verdict != "INCONCLUSIVE":
            return ""
        return cause(self.validity) if breaches(self.validity) else undecided_cause(self.verdicts)

    def reset_stats(self, now: float | None = None) -> None:
        """Locust's "Reset stats": the KPIs are judged again from here (warm-up included)."""
        if self.started_at is not None:
            self.started_at = time.time() if now is None else now
        self.steps, self.capacity_rps, self.capacity_window = [], None, None
        if self.sampler is not None:
            self.sampler.samples.clear()
