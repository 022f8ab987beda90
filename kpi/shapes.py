"""The load profiles as one Locust LoadTestShape.

``kpi``: ramp to the RPS KPI's arrival rate (+2 %) and hold it.
``stress``: step the rate up until a latency/error KPI breaks.
``plain``: Locust's own --users / --spawn-rate.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any

from locust import LoadTestShape

from kpi import live, windows
from kpi.pacing import PER_USER_RPS
from kpi.thresholds import Thresholds

log = logging.getLogger("apprun.kpi")

RAMP_S = 10
# The kpi profile offers the RPS target plus 2 %: a KPI written "rps > 500"
# is then judged at its rate, not failed by a request or two of jitter.
KPI_RATE_HEADROOM = 0.02
DEFAULT_TARGET_RPS = 100.0   # when thresholds.yaml has no "http_reqs: rps" target
STRESS_STEP_S = 15
STRESS_STEP_FACTOR = 1.25
STRESS_SETTLE_S = 3          # the first seconds of a stress step (users still spawning) are not judged
PROFILES = ("kpi", "stress", "plain")


def kpi_users(target_rps: float) -> int:
    return math.ceil(target_rps * (1 + KPI_RATE_HEADROOM) / PER_USER_RPS)


def stress_rate(target_rps: float, step: int) -> float:
    return target_rps * 0.5 * STRESS_STEP_FACTOR ** step


class KpiLoadShape(LoadTestShape):
    """``--load-profile`` picks the shape (see the module docstring).  The
    web UI hides its user/ramp-up fields: the profile sets them
    (``--load-profile plain`` shows them again, see kpi/webui.py)."""

    def tick(self) -> tuple[int, float] | None:
        environment = self.runner.environment
        options = environment.parsed_options
        run_time = self.get_run_time()
        if options.run_time and run_time > options.run_time:
            return None
        thresholds: Thresholds = environment.apprun_thresholds
        target_rps = thresholds.target("http_reqs", "rps") or DEFAULT_TARGET_RPS
        if options.load_profile == "plain":
            return options.num_users or 1, options.spawn_rate or 1
        if options.load_profile == "kpi":
            users = kpi_users(target_rps)
            return users, max(1.0, users / RAMP_S)
        return self._stress(thresholds, target_rps, run_time)

    def _stress(self, thresholds: Thresholds, target_rps: float, run_time: float) -> tuple[int, float] | None:
        step = int(run_time // STRESS_STEP_S)
        steps = live.run.steps
        if step > len(steps):  # a step just ended: judge its window
            judge_stress_step(thresholds, stress_rate(target_rps, len(steps)))
            if not steps[-1]["latency_held"]:
                log.warning("stress: a latency/error KPI broke at %.0f req/s offered", steps[-1]["offered_rps"])
                return None
        users = math.ceil(stress_rate(target_rps, step) / PER_USER_RPS)
        return users, max(1.0, users / 5)


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
