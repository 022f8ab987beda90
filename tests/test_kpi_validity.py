"""The measurement's own validity (kpi/validity.py): budgets, checks per
process, INCONCLUSIVE over any KPI result, and stress steps."""
from __future__ import annotations

import pytest

from kpi.collector import Collector
from kpi.evaluate import Verdict
from kpi.state import RunState
from kpi.thresholds import ThresholdsError, parse
from kpi.validity import DEFAULT_BUDGETS, breaches, cause, judge, parse_budgets
from kpi.windows import RunFigures, judge_stress_step

LAG, CPU, MACHINE = "generator_loop_lag_ms", "generator_cpu_percent", "machine_cpu_percent"


def test_defaults_fill_in_and_null_turns_a_budget_off() -> None:
    assert parse_budgets(None) == DEFAULT_BUDGETS
    assert parse_budgets({MACHINE: None, LAG: 50}) == {**DEFAULT_BUDGETS, MACHINE: None, LAG: 50.0}


@pytest.mark.parametrize("validity, message", [
    ({"cpu": 5}, "unknown validity budget"), ({LAG: -1}, "positive number"), ({LAG: "fast"}, "positive number"),
    ([1], "must be a mapping"),
])
def test_bad_budgets_are_a_thresholds_error(validity, message) -> None:
    with pytest.raises(ThresholdsError, match=message):
        parse({"metrics": {"http_reqs": ["count > 0"]}, "validity": validity})


def test_each_process_is_judged_on_its_own() -> None:
    gauges = {f"{CPU}|worker pid 1": [40.0, 50.0], f"{CPU}|worker pid 2": [90.0, 96.0],
              f"{LAG}|worker pid 1": [0.5] * 99 + [30.0], MACHINE: [70.0, 80.0]}
    checks = judge(gauges, DEFAULT_BUDGETS)
    assert [(c.budget_name, c.where, c.measured, c.ok) for c in checks] == [
        (CPU, "worker pid 1", 45.0, True), (CPU, "worker pid 2", 93.0, False),
        (LAG, "worker pid 1", 0.5, True),           # p(99) of 100 wake-ups: the 99th
        (MACHINE, "machine", 75.0, True)]
    assert cause(checks) == f"{CPU} (worker pid 2) 93 >= budget 85"


def test_lag_at_p99_and_a_budget_switched_off() -> None:
    checks = judge({f"{LAG}|local pid 9": [1.0] * 90 + [25.0] * 10, MACHINE: [99.0]}, {**DEFAULT_BUDGETS,
                                                                                        MACHINE: None})
    assert [(c.measured, c.ok) for c in checks] == [(25.0, False), (99.0, True)]


def test_inconclusive_whatever_the_kpis_say() -> None:
    run = RunState(verdicts=[Verdict("http_reqs", "rps > 1", 5.0, True)])
    assert run.verdict == "PASS"
    run.validity = judge({MACHINE: [100.0, 100.0]}, DEFAULT_BUDGETS)
    assert run.verdict == "INCONCLUSIVE"
    run.verdicts = [Verdict("http_reqs", "rps > 1", 0.5, False)]
    assert run.verdict == "INCONCLUSIVE"
    run.validity = judge({MACHINE: [50.0]}, DEFAULT_BUDGETS)
    assert run.verdict == "FAIL"


def test_no_generator_samples_is_not_a_breach() -> None:
    assert breaches(judge({}, DEFAULT_BUDGETS)) == []


def test_a_stress_step_measured_on_a_saturated_machine_is_not_held() -> None:
    thresholds = parse({"metrics": {"http_req_duration": ["p(95) < 100"], "http_reqs": ["rps > 1"]}})
    collector = Collector()
    for second in range(100, 115):
        for _ in range(10):
            collector.request(second, "GET", "/x", 5, failed=False)
        collector.gauge(second, MACHINE, 50.0 if second < 110 else 100.0)
    calm = judge_stress_step(RunFigures(collector), thresholds, 10, 100, 110)
    saturated = judge_stress_step(RunFigures(collector), thresholds, 10, 110, 115)
    assert (calm["held"], calm["invalid"]) == (True, "")
    assert saturated["held"] is False and saturated["broken"] == [] and MACHINE in saturated["invalid"]


def test_gauges_travel_from_workers_to_the_master() -> None:
    worker, master = Collector(), Collector()
    worker.gauge(7, f"{LAG}|worker pid 3", 1.5)
    master.gauge(7, f"{LAG}|worker pid 3", 2.5)
    master.merge(worker.drain())
    assert master.gauges_between(0, 10) == {f"{LAG}|worker pid 3": [2.5, 1.5]}
    assert worker.gauges_between(0, 10) == {}
