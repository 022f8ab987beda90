"""The load profiles as one Locust LoadTestShape.

``kpi``: ramp to the RPS KPI's arrival rate (+2 %) and hold it.
``stress``: step the rate up until a latency/error KPI breaks.
``noisy``: the kpi profile's users, and for ``--burst-for`` seconds after
``--burst-after`` seconds of load, extra users of one tenant (the user
classes marked ``apprun_burst``, locustfiles/noisy.py) that take it to
``--burst-multiple`` times its share; then back to the steady users.
``plain``: Locust's own --users / --spawn-rate.

Every tick names the user classes to spawn: the burst's class never runs
outside a burst.  Locust stops users last-in first-out, so the end of the
burst stops exactly the burst's users.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any

from locust import LoadTestShape

from kpi import live, tenants, windows
from kpi.pacing import PER_USER_RPS
from kpi.profiles import STRESS_SETTLE_S, STRESS_STEP_S, run_time_limit, stress_rate
from kpi.seed import tenant_tag
from kpi.thresholds import Thresholds

log = logging.getLogger("apprun.kpi")

RAMP_S = 10
# The kpi profile offers the RPS target plus 2 %: a KPI written "rps > 500"
# is then judged at its rate, not failed by a request or two of jitter.
KPI_RATE_HEADROOM = 0.02
DEFAULT_TARGET_RPS = 100.0   # when thresholds.yaml has no "http_reqs: rps" target
BURST_CLASS_MARK = "apprun_burst"        # a user class spawned by the noisy profile's burst only
Tick = tuple[int, float, list[Any]]


def kpi_users(target_rps: float) -> int:
    return math.ceil(target_rps * (1 + KPI_RATE_HEADROOM) / PER_USER_RPS)


class KpiLoadShape(LoadTestShape):
    """``--load-profile`` picks the shape (see the module docstring).  The
    web UI hides its user/ramp-up fields: the profile sets them
    (``--load-profile plain`` shows them again, see kpi/webui.py)."""

    def tick(self) -> Tick | None:
        environment = self.runner.environment
        options = environment.parsed_options
        run_time = self.get_run_time()
        over = run_time > run_time_limit(options.load_profile, options.run_time)
        if over and options.load_profile != "stress":
            return None
        thresholds: Thresholds = environment.apprun_thresholds
        target_rps = thresholds.target("http_reqs", "rps") or DEFAULT_TARGET_RPS
        steady = steady_classes(environment.user_classes)
        if options.load_profile == "plain":
            return options.num_users or 1, options.spawn_rate or 1, steady
        if options.load_profile == "kpi":
            users = kpi_users(target_rps)
            return users, max(1.0, users / RAMP_S), steady
        if options.load_profile == "noisy":
            return self._noisy(environment, kpi_users(target_rps), steady)
        return self._stress(thresholds, target_rps, run_time, over, steady)

    def _stress(self, thresholds: Thresholds, target_rps: float, run_time: float, over: bool,
                steady: list[Any]) -> Tick | None:
        step = int(run_time // STRESS_STEP_S)
        run = live.run
        if step > run.last_step:  # a step just ended (the run's last one too): judge its window
            run.last_step = step
            judge_stress_step(thresholds, stress_rate(target_rps, step - 1))
            if not run.steps[-1]["latency_held"]:
                log.warning("stress: a latency/error KPI broke at %.0f req/s offered", run.steps[-1]["offered_rps"])
                return None
        if over:
            return None
        users = math.ceil(stress_rate(target_rps, step) / PER_USER_RPS)
        return users, max(1.0, users / 5), steady

    def _noisy(self, environment: Any, users: int, steady: list[Any]) -> Tick:
        """The kpi profile's users; during the burst, extra users of the
        noisy tenant (spawned within a second, stopped within a second)."""
        options = environment.parsed_options
        run = live.run
        ramp = (users, max(1.0, users / RAMP_S), steady)
        if run.load_began_at is None:        # the pre-flight runs: the load has not begun
            return ramp
        elapsed = time.time() - run.load_began_at
        phase = tenants.burst_phase(elapsed, options.burst_after, options.burst_for)
        burst = burst_classes(environment.user_classes)
        if phase == tenants.BURST:
            if run.burst_window is None:
                start = int(time.time())
                run.burst_window = [start, start + math.ceil(options.burst_for)]
                log.info("noisy: %s bursts for %.0f s", run.noisy_tenant, options.burst_for)
            extra = tenants.burst_users(users, tenant_weights(steady), run.noisy_tenant or "",
                                        options.burst_multiple)
            return users + extra, float(max(1, extra)), burst
        if phase == tenants.AFTER and run.burst_window is not None and run.burst_window[1] > time.time():
            run.burst_window[1] = int(time.time())      # the burst ended early (a slow tick)
        if run.burst_window is None:
            return ramp
        # Back to the steady users: Locust stops the last started, the burst's.
        return users, float(max(1, users)), steady


def steady_classes(user_classes: list[Any]) -> list[Any]:
    return [c for c in user_classes if not getattr(c, BURST_CLASS_MARK, False)]


def burst_classes(user_classes: list[Any]) -> list[Any]:
    return [c for c in user_classes if getattr(c, BURST_CLASS_MARK, False)]


def tenant_weights(user_classes: list[Any]) -> dict[str, float]:
    """Each tenant's share of the steady users' weight (a persona class's
    ``tenant_id`` names its tenant)."""
    weights: dict[str, float] = {}
    for user_class in user_classes:
        tag = tenant_tag(getattr(user_class, "tenant_id", ""))
        weights[tag] = weights.get(tag, 0.0) + user_class.weight
    return weights


def judge_stress_step(thresholds: Thresholds, offered_rps: float) -> dict[str, Any]:
    """A step is judged on its last STRESS_STEP_S - STRESS_SETTLE_S seconds
    (kpi/windows.py says with which KPIs)."""
    end_s = int(time.time())
    run = live.run
    step = windows.judge_stress_step(live.figures(), thresholds, offered_rps, end_s - STRESS_STEP_S + STRESS_SETTLE_S,
                                     end_s)
    run.steps.append(step)
    log.info("stress: %.0f req/s offered, %.0f measured, %s", offered_rps, step["measured_rps"],
             "every KPI held" if step["held"] else "broke " + ", ".join(step["broken"]))
    best_rps, best_window = windows.capacity(run.steps)
    if best_rps is not None:
        run.capacity_rps, run.capacity_window = best_rps, best_window
    return step
