"""The interval of tenant_p95_ratio (kpi/uncertainty.py) and what the gate
does with it (kpi/evaluate.py, kpi/state.py): a ratio whose interval holds
its bound is UNDECIDED and the run INCONCLUSIVE (exit 4), never a PASS or
a FAIL decided by a few noisy seconds."""
from __future__ import annotations

import pytest

from kpi.collector import Collector
from kpi.evaluate import NO_INTERVAL, Snapshot, evaluate, format_table
from kpi.live import decided_failures
from kpi.state import RunState
from kpi.tenants import NoisyRun
from kpi.thresholds import parse
from kpi.uncertainty import worst_ratio_interval
from kpi.validity import ValidityCheck
from kpi.windows import RunFigures, snapshot_between

BEFORE = range(1000, 1010)
DURING = range(1010, 1030)
RATIO_KPI = {"metrics": {"tenant_p95_ratio": ["value < 2"]}}


def seconds(window: range, ms_of: dict[int, float] | None = None, default_ms: float = 3.0,
            spread: float = 0.0, stalled: frozenset[int] = frozenset()) -> dict[int, dict[float, int]]:
    """Per second 100 requests: 90 fast ones and a tail of 10 at
    ``ms_of[second]`` (default_ms otherwise), spread over +-``spread`` ms;
    in a ``stalled`` second 30 take that second's tail."""
    ms_of = ms_of or {}
    window_data = {}
    for second in window:
        tail = ms_of.get(second, default_ms)
        if second in stalled:
            window_data[second] = {1.0: 70, tail: 30}
            continue
        histogram = {1.0: 90}
        for i in range(10):
            value = round(tail + spread * (i - 4.5) / 4.5, 3)
            histogram[value] = histogram.get(value, 0) + 1
        window_data[second] = histogram
    return window_data


def test_steady_windows_give_an_interval_that_is_the_ratio_itself() -> None:
    interval = worst_ratio_interval([(seconds(BEFORE, default_ms=3), seconds(DURING, default_ms=6))],
                                    list(BEFORE), list(DURING))
    assert interval == (2.0, 2.0)


def test_a_few_slow_seconds_before_the_burst_widen_the_interval_around_the_ratio() -> None:
    """As in a run of 2026-11-25 that passed at 1.88: three slow seconds
    before the burst raised the denominator.  Resampled, fewer of them come
    back in some draws, and without them the ratio is above 2."""
    slow_before = seconds(BEFORE, {1003: 6, 1004: 6, 1005: 6}, default_ms=3, stalled=frozenset({1003, 1004, 1005}))
    during = seconds(DURING, default_ms=7, spread=1)
    (kpi,) = evaluate(snapshot_between(RunFigures(collector_of(slow_before, during),
                                                  noisy=NoisyRun("tenant-2", (1010, 1030))), 1000, 1030),
                      parse(RATIO_KPI))
    low, high = worst_ratio_interval([(slow_before, during)], list(BEFORE), list(DURING))
    steady_low, steady_high = worst_ratio_interval([(seconds(BEFORE, default_ms=3), during)],
                                                   list(BEFORE), list(DURING))
    assert kpi.passed and kpi.measured < 2 and kpi.undecided      # the point passes; the interval does not say
    assert low < 2 < high
    assert high - low > 3 * (steady_high - steady_low)


def test_the_interval_is_the_same_for_the_same_run() -> None:
    windows = [(seconds(BEFORE, {1002: 5}, spread=1), seconds(DURING, {1015: 12}, default_ms=6, spread=2))]
    first = worst_ratio_interval(windows, list(BEFORE), list(DURING))
    assert first is not None and first == worst_ratio_interval(windows, list(BEFORE), list(DURING))


def test_the_worst_tenants_interval_is_at_least_each_tenants() -> None:
    calm = (seconds(BEFORE, spread=1), seconds(DURING, default_ms=3.3, spread=1))
    slowed = (seconds(BEFORE, spread=1), seconds(DURING, {1012: 15}, default_ms=7, spread=2))
    both = worst_ratio_interval([calm, slowed], list(BEFORE), list(DURING))
    alone = worst_ratio_interval([slowed], list(BEFORE), list(DURING))
    assert both is not None and alone is not None and both[0] >= alone[0] and both[1] >= alone[1]


def test_too_few_seconds_or_an_empty_window_give_no_interval() -> None:
    assert worst_ratio_interval([(seconds(range(1000, 1004)), seconds(DURING))], list(range(1000, 1004)),
                                list(DURING)) is None
    assert worst_ratio_interval([({}, seconds(DURING))], list(BEFORE), list(DURING)) is None
    assert worst_ratio_interval([], list(BEFORE), list(DURING)) is None


def collector_of(before: dict[int, dict[float, int]], during: dict[int, dict[float, int]]) -> Collector:
    """tenant-1's requests as given, and a noisy tenant-2 that bursts."""
    collector = Collector()
    for second, histogram in {**before, **during}.items():
        for ms, count in histogram.items():
            for _ in range(count):
                collector.request(second, "GET", "/data/products [list]", ms, False, tenant="tenant-1")
        for _ in range(50 if second in during else 10):
            collector.request(second, "POST", "/functions/[name]/invoke [spin]", 1000.0, False, tenant="tenant-2")
    return collector


def snapshot_with(ratio: float, interval: tuple[float, float]) -> Snapshot:
    return Snapshot(duration_s=30, values={"tenant_p95_ratio": ratio}, intervals={"tenant_p95_ratio": interval})


@pytest.mark.parametrize(("ratio", "interval", "passed", "result", "verdict"), [
    (1.88, (1.4, 2.6), True, "UNDECIDED", "INCONCLUSIVE"),     # a pass the noise may have made
    (2.3, (1.7, 3.0), False, "UNDECIDED", "INCONCLUSIVE"),     # a fail the noise may have made
    (1.5, (1.3, 1.8), True, "PASS", "PASS"),
    (2.8, (2.3, 3.4), False, "FAIL", "FAIL"),
])
def test_a_kpi_whose_interval_holds_its_bound_is_undecided(ratio: float, interval: tuple[float, float],
                                                           passed: bool, result: str, verdict: str) -> None:
    (kpi,) = evaluate(snapshot_with(ratio, interval), parse(RATIO_KPI))
    assert (kpi.measured, kpi.passed, kpi.result, kpi.interval) == (ratio, passed, result, interval)
    assert f"95 % interval {interval[0]:g}-{interval[1]:g}" in kpi.note
    run = RunState(verdicts=[kpi])
    assert run.verdict == verdict
    if verdict == "INCONCLUSIVE":
        assert run.inconclusive_cause.startswith(f"tenant_p95_ratio {ratio:g} (95 % interval")
        assert "UNDECIDED" in format_table([kpi]) and kpi.to_json()["undecided"] is True
    else:
        assert run.inconclusive_cause == ""


def test_a_decided_failure_or_a_breached_budget_outranks_an_undecided_kpi() -> None:
    thresholds = parse({"metrics": {"tenant_p95_ratio": ["value < 2"], "quiet_429": ["count == 0"]}})
    snapshot = snapshot_with(1.9, (1.5, 2.5))
    snapshot.values["quiet_429"] = 3
    run = RunState(verdicts=evaluate(snapshot, thresholds))
    assert run.verdict == "FAIL" and run.inconclusive_cause == ""
    run.validity = [ValidityCheck("generator_loop_lag_ms", "local", 35.0, 20.0)]
    assert run.verdict == "INCONCLUSIVE" and run.inconclusive_cause.startswith("generator_loop_lag_ms")


def test_the_noisy_runs_snapshot_carries_the_interval_of_its_ratio() -> None:
    """From the collector to the KPI: the interval rests on the same seconds
    as the ratio, and holds it."""
    before = seconds(BEFORE, {1004: 9.0, 1005: 9.0}, default_ms=3)
    during = seconds(DURING, {second: 6.0 + (second % 3) for second in DURING})
    figures = RunFigures(collector_of(before, during), noisy=NoisyRun("tenant-2", (1010, 1030)))
    snapshot = snapshot_between(figures, 1000, 1030)
    low, high = snapshot.intervals["tenant_p95_ratio"]
    assert low <= snapshot.values["tenant_p95_ratio"] <= high and low < high
    (kpi,) = evaluate(snapshot, parse(RATIO_KPI))
    assert kpi.interval == (low, high)


def test_the_bootstrap_reads_a_percentile_as_the_gate_does() -> None:
    """The draw that takes each second once is the run itself: its p95s are
    kpi.percentiles.histogram_percentile's, for any histograms."""
    import random

    import numpy as np

    from kpi.percentiles import histogram_percentile
    from kpi.uncertainty import _percentiles

    rng = random.Random(7)
    for _ in range(200):
        histogram = {round(rng.uniform(0.5, 50), 2): rng.randint(1, 30) for _ in range(rng.randint(1, 40))}
        values = sorted(histogram)
        counts = np.array([[histogram[v] for v in values]], dtype=float)
        for percentile in (50, 95, 99, 100):
            assert _percentiles(counts, np.array(values), percentile)[0] == histogram_percentile(histogram, percentile)


def test_the_interval_holds_the_runs_own_ratio_and_survives_sparse_seconds() -> None:
    """A worst-of percentile interval can lie beside the figure; it is
    widened to hold it.  A tenant with requests in only 4 of 10 seconds
    leaves some draws without a ratio: those are dropped, not the interval."""
    calm = (seconds(BEFORE, spread=1), seconds(DURING, default_ms=3.3, spread=1))
    sparse_before = {second: histogram for second, histogram in seconds(BEFORE, default_ms=4).items() if second < 1004}
    sparse = (sparse_before, seconds(DURING, {1012: 15}, default_ms=6, spread=2))
    for windows in ([calm, sparse], [sparse]):
        point = max(_p95(during) / _p95(before) for before, during in windows)
        low, high = worst_ratio_interval(windows, list(BEFORE), list(DURING))
        assert low <= round(point, 3) <= high


def _p95(window: dict[int, dict[float, int]]) -> float:
    from kpi.percentiles import histogram_percentile

    merged: dict[float, int] = {}
    for histogram in window.values():
        for value, count in histogram.items():
            merged[value] = merged.get(value, 0) + count
    return histogram_percentile(merged, 95)


@pytest.mark.parametrize(("expression", "ratio", "interval", "undecided"), [
    ("value < 2", 1.9, (2.1, 5.4), True),       # the figure on one side, the whole interval on the other
    ("value == 2", 2.0, (1.5, 2.5), True),      # holds inside, not at the ends
    ("value > 1", 2.0, (1.5, 2.5), False),
    ("value >= 3", 2.0, (2.9, 3.2), True),
])
def test_the_bound_must_leave_the_figure_and_both_ends_on_one_side(expression: str, ratio: float,
                                                                 interval: tuple[float, float],
                                                                 undecided: bool) -> None:
    (kpi,) = evaluate(snapshot_with(ratio, interval), parse({"metrics": {"tenant_p95_ratio": [expression]}}))
    assert kpi.undecided is undecided


def test_a_ratio_that_gets_no_interval_says_so_and_is_judged_on_its_figure() -> None:
    snapshot = Snapshot(duration_s=30, values={"tenant_p95_ratio": 2.5}, intervals={"tenant_p95_ratio": None})
    (kpi,) = evaluate(snapshot, parse(RATIO_KPI))
    assert (kpi.result, kpi.interval, kpi.note) == ("FAIL", None, NO_INTERVAL)
    assert decided_failures([kpi]) == []               # abort_on_fail waits for its interval
    decided = evaluate(snapshot_with(2.8, (2.3, 3.4)), parse(RATIO_KPI))
    assert decided_failures(decided) == decided
    assert decided_failures(evaluate(snapshot_with(2.3, (1.7, 3.0)), parse(RATIO_KPI))) == []


@pytest.mark.parametrize("end_s", [1020, 1030, 1035])
def test_the_interval_rests_on_the_seconds_of_the_ratio(end_s: int) -> None:
    """Before: [start_s, burst start); during: [burst start, min(burst end,
    end_s)): mid-burst (live), at its end, and after it."""
    before = seconds(BEFORE, {1002: 5}, spread=1)
    during = seconds(range(1010, 1035), {1012: 15, 1031: 30, 1033: 40}, default_ms=6, spread=2)
    snapshot = snapshot_between(RunFigures(collector_of(before, during), noisy=NoisyRun("tenant-2", (1010, 1030))),
                                1000, end_s)
    burst_seconds = list(range(1010, min(1030, end_s)))
    expected = worst_ratio_interval([(collector_seconds(before), collector_seconds(
        {second: during[second] for second in burst_seconds}))], list(BEFORE), burst_seconds)
    assert snapshot.intervals["tenant_p95_ratio"] == expected is not None


def collector_seconds(window: dict[int, dict[float, int]]) -> dict[int, dict[float, int]]:
    """A window as the collector gives it back: each value read back from its bucket."""
    from kpi import histogram

    read_back: dict[int, dict[float, int]] = {}
    for second, counts in window.items():
        for value, count in counts.items():
            key = histogram.bucket_value(histogram.bucket(value))
            read_back.setdefault(second, {})[key] = read_back.get(second, {}).get(key, 0) + count
    return read_back


def test_untagged_quiet_requests_get_an_interval_too() -> None:
    collector = collector_of(seconds(BEFORE, spread=1), seconds(DURING, default_ms=6, spread=1))
    for second in list(BEFORE) + list(DURING):
        for _ in range(20):
            collector.request(second, "GET", "/healthz", 2.0, False)          # no tenant tag: row "(none)"
    snapshot = snapshot_between(RunFigures(collector, noisy=NoisyRun("tenant-2", (1010, 1030))), 1000, 1030)
    assert snapshot.intervals["tenant_p95_ratio"] is not None
