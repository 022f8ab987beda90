"""The load profiles' lengths and stress steps (kpi/shapes.py runs them).
Without Locust, so the gate's pure modules and their tests can use them
(importing Locust monkey-patches the process)."""
from __future__ import annotations

STRESS_STEP_S = 15
STRESS_STEP_FACTOR = 1.25
STRESS_SETTLE_S = 3          # the first seconds of a stress step (users still spawning) are not judged
# A stress run's own length when --run-time is not given: 10 steps offer 0.5x
# to 3.7x the RPS target, past where this 2-core machine's generator
# saturates.  A shorter run can stop before any step breaks a KPI, and its
# capacity is then only a lower bound (kpi/windows.py, unreached_rate).
STRESS_MAX_STEPS = 10
DEFAULT_RUN_TIME_S = 60.0    # every other profile's, when --run-time is not given
PROFILES = ("kpi", "stress", "noisy", "plain")


def run_time_limit(profile: str, run_time: float | None) -> float:
    """The run's length in seconds: --run-time, else the profile's own (a
    stress run needs its steps; 60 s ended one at its third, 0.8x the target)."""
    if run_time:
        return float(run_time)
    return float(STRESS_STEP_S * STRESS_MAX_STEPS) if profile == "stress" else DEFAULT_RUN_TIME_S


def stress_rate(target_rps: float, step: int) -> float:
    return target_rps * 0.5 * STRESS_STEP_FACTOR ** step
