"""Which seconds the gate judges, and how stress steps are judged
(kpi/windows.py), over hand-made collectors and resource samples."""
from __future__ import annotations

from pathlib import Path

import pytest

from kpi.collector import Collector
from kpi.evaluate import evaluate
from kpi.profiles import DEFAULT_RUN_TIME_S, STRESS_MAX_STEPS, STRESS_STEP_S, run_time_limit, stress_rate
from kpi.sampler import ResourceSample
from kpi.state import RunState
from kpi.thresholds import parse
from kpi.windows import (
    RunFigures,
    capacity,
    capacity_text,
    judge_stress_step,
    judged_window,
    snapshot_between,
    unreached_rate,
)

THRESHOLDS = parse({"warmup_s": 5, "metrics": {
    "http_req_duration": ["p(95) < 100"], "http_reqs": ["rps > 500"], "sut_cpu_percent": ["avg < 50"],
    "wasm_hot_us": ["med < 1000"]}})


def loaded(seconds: range, latency_ms: float, per_second: int = 10, collector: Collector | None = None) -> Collector:
    collector = collector or Collector()
    for second in seconds:
        for _ in range(per_second):
            collector.request(second, "GET", "/x", latency_ms, failed=False)
    return collector


def cpu(seconds: range, percent_of_a_core: float) -> list[ResourceSample]:
    return [ResourceSample(t, {"gateway": 50.0}, {"gateway": percent_of_a_core}) for t in seconds]


def test_warm_up_counts_from_the_first_request_and_ends_when_the_load_stops() -> None:
    collector = loaded(range(1003, 1020), 5)          # test start 1000.2; pre-flight until 1003
    window = judged_window(1000.2, collector.first_second(1000), 1020.7, 5, now=2000)
    assert window == (1008, 1020)
    snapshot = snapshot_between(RunFigures(collector), *window)
    assert sum(series.count for series in snapshot.requests.values()) == 12 * 10


def test_without_requests_the_warm_up_counts_from_test_start_and_the_run_is_live() -> None:
    assert judged_window(1000.2, None, None, 5, now=1030.5) == (1005, 1030)


def test_cleanup_after_the_load_is_not_judged() -> None:
    collector = loaded(range(1020, 1025), 900, collector=loaded(range(1000, 1020), 5))
    window = judged_window(1000, collector.first_second(1000), 1020, 0, now=2000)
    measured = evaluate(snapshot_between(RunFigures(collector), *window), THRESHOLDS)
    assert next(v for v in measured if v.key == "http_req_duration").measured == pytest.approx(5, rel=0.01)


def test_resources_without_samples_fail_rather_than_pass() -> None:
    verdicts = evaluate(snapshot_between(RunFigures(loaded(range(10), 5)), 0, 10), THRESHOLDS)
    assert next(v for v in verdicts if v.key == "sut_cpu_percent").note == "no samples"


def test_a_stress_step_is_judged_on_every_windowed_kpi_but_the_rate() -> None:
    collector = loaded(range(100, 112), 5, per_second=30)
    cool = judge_stress_step(RunFigures(collector, cpu(range(100, 112), 40), cpus=2), THRESHOLDS, 300, 100, 112)
    assert cool["held"] and cool["latency_held"] and cool["broken"] == []
    assert cool["measured_rps"] == 30 and cool["window"] == [100, 112]   # rps > 500 is not a step criterion
    hot = judge_stress_step(RunFigures(collector, cpu(range(100, 112), 190), cpus=2), THRESHOLDS, 375, 100, 112)
    assert hot["broken"] == ["sut_cpu_percent"] and hot["latency_held"] and not hot["held"]
    slow = judge_stress_step(RunFigures(loaded(range(100, 112), 400), cpu(range(100, 112), 40), cpus=2),
                             THRESHOLDS, 450, 100, 112)
    assert not slow["latency_held"] and slow["broken"] == ["http_req_duration"]


def test_capacity_is_the_best_step_that_held_everything() -> None:
    steps = [{"measured_rps": 250, "held": True, "window": [0, 12]},
             {"measured_rps": 310, "held": True, "window": [15, 27]},
             {"measured_rps": 390, "held": False, "window": [30, 42]}]
    assert capacity(steps) == (310, [15, 27])
    assert capacity([dict(steps[2])]) == (None, None)


def test_a_stopped_stress_run_is_judged_on_its_capacity_step() -> None:
    assert judged_window(1000, 1000, None, 5, now=1100, capacity_window=[1030, 1042]) == (1005, 1100)  # live
    assert judged_window(1000, 1000, 1100, 5, now=1200, capacity_window=[1030, 1042]) == (1030, 1042)


def stress_run(steps: list[dict], step_rps: float, step_latency_ms: float = 5, stopped: bool = True) -> RunState:
    """A stress run judged on its capacity step (as kpi/live.py's
    judged_verdicts does for kpi/plugin.py's verdict and the KPIs tab)."""
    collector = loaded(range(100, 112), step_latency_ms, per_second=int(step_rps))
    figures = RunFigures(collector, cpu(range(100, 112), 40), {"wasm_hot_us": [200.0]}, cpus=2)
    run = RunState(profile="stress", steps=steps, capacity_rps=step_rps, capacity_window=[100, 112])
    run.verdicts = unreached_rate(evaluate(snapshot_between(figures, 100, 112), THRESHOLDS), steps, 60, stopped)
    return run


def step(rps: float, broken: tuple[str, ...] = (), invalid: str = "") -> dict:
    return {"offered_rps": rps, "measured_rps": rps, "held": not broken and not invalid, "broken": list(broken),
            "latency_held": "http_req_duration" not in broken, "invalid": invalid, "window": [100, 112]}


def rate_of(run: RunState) -> tuple[bool, bool, str]:
    verdict = next(v for v in run.verdicts if v.key == "http_reqs")
    return verdict.passed, verdict.undecided, verdict.result


SATURATED = "generator_loop_lag_ms 31 over its budget of 20"


def test_a_stress_run_that_stopped_before_any_step_broke_cannot_fail_the_rate() -> None:
    """Its last step ran at 390 req/s because the run stopped there, not
    because the stack broke: `rps > 500` is UNDECIDED (exit 4), not FAIL,
    and the capacity is a lower bound.  Before the fix this run read FAIL."""
    run = stress_run([step(250), step(390)], 390)
    assert rate_of(run) == (False, True, "UNDECIDED")
    rate = next(v for v in run.verdicts if v.key == "http_reqs")
    assert rate.measured == 390 and "before the run stopped (60 s of load)" in rate.note
    assert "--run-time" in rate.note
    assert run.verdict == "INCONCLUSIVE" and run.inconclusive_reason == "a KPI is undecided"
    assert run.inconclusive_cause.startswith("http_reqs 390 against `rps > 500`: no stress step above the capacity")
    assert capacity_text(390, run.steps).startswith("at least 390 req/s: no step above it broke a KPI")
    # Every other KPI of that step is still judged as measured.
    assert all(not v.undecided for v in run.verdicts if v.key != "http_reqs")
    # While the steps still climb, the KPIs tab says so rather than FAIL.
    climbing = next(v for v in stress_run([step(250)], 250, stopped=False).verdicts if v.key == "http_reqs")
    assert climbing.undecided and "still climbing" in climbing.note


def test_which_breaks_find_the_stacks_limit() -> None:
    """Only a break in a valid measurement above the capacity step is a
    limit.  A break measured by a saturated generator is the generator's; a
    break below the capacity (a cold first step) is below steps that held."""
    decided = {
        "cpu above": [step(250), step(390), step(480, ("sut_cpu_percent",))],
        "latency above": [step(250), step(390), step(480, ("http_req_duration",))],
    }
    undecided = {
        "saturated above": [step(250), step(390), step(480, ("http_req_duration",), SATURATED)],
        "broke below": [step(250, ("http_req_duration{name:/x}",)), step(312), step(390)],
    }
    for case, steps in decided.items():
        run = stress_run(steps, 390)
        assert (rate_of(run), run.verdict) == ((False, False, "FAIL"), "FAIL"), case
        assert capacity_text(390, steps) == "390 req/s held every KPI; the KPI table judges that step", case
    for case, steps in undecided.items():
        run = stress_run(steps, 390)
        assert (rate_of(run), run.verdict) == ((False, True, "UNDECIDED"), "INCONCLUSIVE"), case
        assert capacity_text(390, steps).startswith("at least 390 req/s"), case
    # No step held at all and the first one broke: that is a limit, below every step.
    assert stress_run([step(250, ("http_req_duration",))], 250).verdict == "FAIL"


def test_a_stress_run_that_reached_the_rate_passes_and_other_misses_stay_failures() -> None:
    assert stress_run([step(390), step(520)], 520).verdict == "PASS"
    slow = stress_run([step(390)], 390, step_latency_ms=400)      # the judged step itself is too slow
    assert {v.key: v.result for v in slow.verdicts if not v.passed} == {
        "http_req_duration": "FAIL", "http_reqs": "UNDECIDED"}
    assert slow.verdict == "FAIL"


def test_only_a_lower_bound_on_the_rate_can_be_unreached() -> None:
    """``rps > N`` on http_reqs (tagged or not) is; an upper bound, a count
    or a rate with no samples at all stays failed."""
    kpis = parse({"metrics": {"http_reqs": ["rps < 100", "count > 99999"], "http_reqs{tenant:t1}": ["rps > 500"],
                              "http_reqs{tenant:t9}": ["rps > 1"]}})
    collector = Collector()
    for second in range(100, 112):
        for _ in range(390):
            collector.request(second, "GET", "/x", 5, failed=False, tenant="t1")
    verdicts = unreached_rate(evaluate(snapshot_between(RunFigures(collector), 100, 112), kpis), [step(390)], 60, True)
    assert [(v.key, v.expression, v.passed, v.undecided) for v in verdicts] == [
        ("http_reqs", "rps < 100", False, False), ("http_reqs", "count > 99999", False, False),
        ("http_reqs{tenant:t1}", "rps > 500", False, True), ("http_reqs{tenant:t9}", "rps > 1", False, False)]


def test_a_stress_run_shorter_than_its_first_step() -> None:
    assert capacity_text(None, []).startswith("no step judged yet")
    run = stress_run([], 390)
    rate = next(v for v in run.verdicts if v.key == "http_reqs")
    assert rate.undecided and "before its first stress step ended" in rate.note


def test_each_profile_has_its_own_run_time_and_run_time_overrides_it() -> None:
    assert run_time_limit("stress", None) == STRESS_STEP_S * STRESS_MAX_STEPS
    assert stress_rate(500, STRESS_MAX_STEPS - 1) > 3 * 500    # its last step offers over 3x the target
    assert run_time_limit("kpi", None) == run_time_limit("noisy", None) == DEFAULT_RUN_TIME_S == 60
    assert run_time_limit("stress", 32) == 32 and run_time_limit("kpi", 8) == 8
    # locust.conf must not set one for every profile: 60 s stopped the stress steps at 0.8x the target.
    conf = (Path(__file__).resolve().parents[1] / "locust.conf").read_text()
    assert not [line for line in conf.splitlines() if line.split("=")[0].strip() in ("run-time", "run_time", "t")]


def test_stack_cpu_in_both_readings_of_the_seed() -> None:
    """sut_cpu_percent: % of the whole machine; sut_cpu_cores: docker stats'
    reading, 1.0 = one core.  The same samples, 1.5 cores on 2 cores."""
    figures = RunFigures(loaded(range(10), 5), cpu(range(10), 150.0), {}, cpus=2)
    thresholds = parse({"metrics": {"sut_cpu_percent": ["avg < 80"], "sut_cpu_cores": ["avg < 0.5"]}})
    results = evaluate(snapshot_between(figures, 0, 10), thresholds)
    assert [(v.key, v.measured, v.passed) for v in results] == [("sut_cpu_percent", 75.0, True),
                                                                ("sut_cpu_cores", 1.5, False)]


def test_wasm_figures_keep_their_sources_apart() -> None:
    """wasm_hot_us is the server's figure, wasm_invoke_ms the HTTP round trip."""
    preflight = {"wasm_hot_us": [180.0, 200.0, 220.0], "wasm_invoke_ms": [0.5, 0.6, 0.7]}
    figures = RunFigures(loaded(range(10), 5), (), preflight)
    thresholds = parse({"metrics": {"wasm_hot_us": ["med < 1000"], "wasm_invoke_ms": ["med < 0.55"]}})
    results = evaluate(snapshot_between(figures, 0, 10), thresholds)
    assert [(v.measured, v.passed) for v in results] == [(200.0, True), (0.6, False)]


def test_stack_cpu_per_request_against_the_floor() -> None:
    """1.5 cores over 10 s is 15 CPU-seconds; over 5,000 requests, 3 ms each:
    7.5x a floor of 0.4 ms."""
    from kpi.windows import stack_cost

    samples = cpu(range(10), 150.0)
    assert stack_cost(samples, 5000, 10, {"cpu_ms_per_request": 0.4}) == {
        "stack_cpu_ms_per_request": 3.0, "ratio_to_floor": 7.5}
    assert stack_cost(samples, 5000, 10, {"error": "no floor"})["ratio_to_floor"] is None
    assert stack_cost([], 5000, 10, None)["stack_cpu_ms_per_request"] is None


def test_totals_come_from_the_same_buckets_as_the_kpis() -> None:
    from kpi.windows import totals

    collector = loaded(range(10), 5, per_second=18, collector=loaded(range(10), 50, per_second=1))
    collector.request(3, "GET", "/x", 5, failed=True)
    figures = totals(collector.snapshot(0, 10))
    assert (figures["requests"], figures["failures"]) == (191, 1)
    assert figures["median_ms"] == pytest.approx(5, rel=0.01) and figures["p95_ms"] == pytest.approx(50, rel=0.01)
