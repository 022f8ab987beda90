"""Which seconds are judged, and how a stress step is judged: pure functions
over the collector, the resource samples and the pre-flight figures, so they
are tested without Locust (importing Locust monkey-patches the process)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from kpi.collector import Collector
from kpi.evaluate import (
    COUNTERS,
    MEASURED_DECIMALS,
    TIMINGS,
    Snapshot,
    Verdict,
    evaluate,
    histogram_percentile,
)
from kpi.sampler import ResourceSample
from kpi.tenants import RATIO_METRIC, NoisyRun, fairness_values, tenant_key, tenant_rows
from kpi.thresholds import Thresholds, parse_expression
from kpi.uncertainty import worst_ratio_interval
from kpi.validity import ValidityCheck, breaches, cause, judge

PREFLIGHT_METRICS = ("auth_checks_per_s", "wasm_cold_start_ms", "wasm_hot_us", "wasm_invoke_ms")
PREFLIGHT_SAMPLES = ("wasm_cold_start_ms", "wasm_hot_us", "wasm_invoke_ms")
PERCENT_PER_CORE = 100.0     # psutil and docker stats: 100 % is one core
RATE_METRIC = "http_reqs"    # the rate a stress run varies


@dataclass
class RunFigures:
    """What a run has gathered so far (the plugin keeps one)."""
    collector: Collector
    samples: Sequence[ResourceSample] = ()
    preflight: dict[str, Any] = field(default_factory=dict)
    cpus: int = 1
    noisy: NoisyRun | None = None      # the noisy profile's tenant and burst


def judged_window(started_at: float, first_request_s: int | None, load_stopped_at: float | None,
                  warmup_s: float, now: float, capacity_window: Sequence[int] | None = None) -> tuple[int, int]:
    """[start, end) in epoch seconds: from the end of the warm-up, counted
    from the first request of the load (not from test start: the pre-flight
    and the function deploy come first), until the load stopped (cleanup and
    shutdown are never judged).  Once a stress run has stopped, its capacity
    step's window is judged instead."""
    if capacity_window and load_stopped_at:
        return int(capacity_window[0]), int(capacity_window[1])
    began = first_request_s if first_request_s is not None else int(started_at)
    return int(began + warmup_s), int(load_stopped_at or now)


def samples_between(samples: Sequence[ResourceSample], start_s: int, end_s: int) -> list[ResourceSample]:
    return [s for s in samples if start_s <= s.t <= end_s + 1]


def snapshot_between(figures: RunFigures, start_s: int, end_s: int) -> Snapshot:
    snapshot = figures.collector.snapshot(start_s, end_s)
    samples = samples_between(figures.samples, start_s, end_s)   # none: "no samples", a failed check
    snapshot.samples["sut_memory_mb"] = [s.total_memory_mb for s in samples]
    snapshot.samples["sut_cpu_percent"] = [s.total_cpu_percent / figures.cpus for s in samples]
    snapshot.samples["sut_cpu_cores"] = [s.total_cpu_percent / PERCENT_PER_CORE for s in samples]
    for key in PREFLIGHT_SAMPLES:
        if figures.preflight.get(key):
            snapshot.samples[key] = list(figures.preflight[key])
    if "auth_checks_per_s" in figures.preflight:
        snapshot.values["auth_checks_per_s"] = figures.preflight["auth_checks_per_s"]
    for counter in COUNTERS:
        snapshot.counters.setdefault(counter, 0)
    if figures.noisy is not None:
        rows = tenant_table(figures, start_s, end_s, snapshot)
        snapshot.values.update(fairness_values(rows, figures.noisy))
        if RATIO_METRIC in snapshot.values:
            quiet = tuple(tenant_key(row["tenant"]) for row in rows if row["role"] == "quiet")
            snapshot.intervals[RATIO_METRIC] = ratio_interval(figures, start_s, end_s, quiet)
    return snapshot


def ratio_interval(figures: RunFigures, start_s: int, end_s: int,
                   quiet: tuple[str, ...]) -> tuple[float, float] | None:
    """The interval of ``tenant_p95_ratio`` (kpi/uncertainty.py) over the same
    seconds as its value: the judged window's seconds before the burst, and
    the burst's seconds within it.  Once the load has stopped these seconds
    no longer change, so the last answer is kept for the same question (the
    web UI asks every 2 s; a bootstrap costs tens of ms on the event loop)."""
    noisy = figures.noisy
    if noisy is None or noisy.burst is None or not quiet:
        return None
    burst_start, burst_end = noisy.burst
    before_seconds = list(range(start_s, min(burst_start, end_s)))
    during_seconds = list(range(burst_start, min(burst_end, end_s)))
    collector = figures.collector
    key = (start_s, end_s, noisy.burst, quiet, collector.changes)
    if collector.last_interval is not None and collector.last_interval[0] == key:
        return collector.last_interval[1]
    per_second = collector.per_second_by_tenant(start_s, end_s)
    windows = []
    for tenant in quiet:
        seconds = dict(per_second.get(tenant, []))
        windows.append(({second: seconds[second] for second in before_seconds if second in seconds},
                        {second: seconds[second] for second in during_seconds if second in seconds}))
    interval = worst_ratio_interval(windows, before_seconds, during_seconds)
    collector.last_interval = (key, interval)
    return interval


def tenant_table(figures: RunFigures, start_s: int, end_s: int, judged: Snapshot | None = None) -> list[dict]:
    """One row per tenant over [start_s, end_s) (kpi/tenants.py); in the
    noisy profile with each tenant's p95 before the burst (from start_s)
    and during it (until end_s at the latest)."""
    collector = figures.collector
    judged = judged if judged is not None else collector.snapshot(start_s, end_s)
    before = during = None
    burst_seconds: dict[str, dict[int, int]] = {}
    noisy = figures.noisy
    if noisy is not None and noisy.burst is not None:
        burst_start, burst_end = noisy.burst
        if burst_start > start_s:
            before = collector.snapshot(start_s, min(burst_start, end_s))
        if end_s > burst_start:
            during = collector.snapshot(burst_start, min(burst_end, end_s))
            burst_seconds = {tenant: {second: sum(durations.values()) for second, durations in seconds
                                      if burst_start <= second < min(burst_end, end_s)}
                             for tenant, seconds in collector.per_second_by_tenant(burst_start, end_s).items()}
    return tenant_rows(judged, judged.counters, noisy, before, during, burst_seconds)


def validity_between(figures: RunFigures, thresholds: Thresholds, start_s: int, end_s: int) -> list[ValidityCheck]:
    """The generator's and the machine's budgets over [start_s, end_s)."""
    return judge(figures.collector.gauges_between(start_s, end_s), thresholds.validity)


def latency_only(thresholds: Thresholds) -> Thresholds:
    """The KPIs whose breach ends a stress run: overall latency and failures."""
    return Thresholds([e for e in thresholds.entries
                       if e.metric in (*TIMINGS, "http_req_failed") and not e.tags])


def windowed(thresholds: Thresholds) -> Thresholds:
    """The KPIs a stress step must hold: all but the rate being varied and
    the pre-flight figures (measured once, not per step)."""
    return Thresholds([e for e in thresholds.entries if e.metric not in ("http_reqs",) + PREFLIGHT_METRICS])


def judge_stress_step(figures: RunFigures, thresholds: Thresholds, offered_rps: float, start_s: int,
                      end_s: int) -> dict[str, Any]:
    window = snapshot_between(figures, start_s, end_s)
    broken = [v.key for v in evaluate(window, windowed(thresholds)) if not v.passed]
    latency_broken = [v.key for v in evaluate(window, latency_only(thresholds)) if not v.passed]
    measured = round(sum(s.count for s in window.requests.values()) / window.duration_s, MEASURED_DECIMALS)
    # A step measured by a saturated generator or machine proves nothing: it is not held.
    invalid = cause(breaches(validity_between(figures, thresholds, start_s, end_s)))
    return {"offered_rps": round(offered_rps, 1), "measured_rps": measured, "held": not broken and not invalid,
            "latency_held": not latency_broken, "broken": broken, "invalid": invalid, "window": [start_s, end_s]}


def _capacity_step(steps: Sequence[dict[str, Any]]) -> int | None:
    """The index of the step with the highest measured rate that held every
    KPI (None: no step held): the one rule for which step is the capacity."""
    held = [index for index, step in enumerate(steps) if step["held"]]
    return max(held, key=lambda index: steps[index]["measured_rps"]) if held else None


def capacity(steps: Sequence[dict[str, Any]]) -> tuple[float | None, list[int] | None]:
    """The highest measured rate of a step that held every KPI, and its window."""
    best = _capacity_step(steps)
    if best is None:
        return None, None
    return steps[best]["measured_rps"], steps[best]["window"]


def capacity_is_lower_bound(steps: Sequence[dict[str, Any]]) -> bool:
    """No judged step above the capacity step broke a KPI in a valid
    measurement: the run stopped (its run time, a stop, or a break measured
    by a saturated generator or machine) before its steps found the stack's
    limit, so its capacity says only that the stack holds at least that
    rate.  A break below the capacity step (a cold first step) is not a
    limit: the steps above it held.  No step judged at all: no limit found."""
    best = _capacity_step(steps)
    above = steps if best is None else steps[best + 1:]
    return not any(step["broken"] and not step["invalid"] for step in above)


def capacity_text(capacity_rps: float | None, steps: Sequence[dict[str, Any]]) -> str:
    """The stress run's capacity in words, for the console, the KPIs tab and the report."""
    if not steps:
        return "no step judged yet (a step lasts 15 s); the KPI table judges the whole run"
    if capacity_rps is None:
        return "no step held every KPI; the KPI table judges the whole run"
    if capacity_is_lower_bound(steps):
        return (f"at least {capacity_rps:g} req/s: no step above it broke a KPI in a valid measurement, so "
                "this is the highest step the run held, not a limit; the KPI table judges that step")
    return f"{capacity_rps:g} req/s held every KPI; the KPI table judges that step"


def unreached_rate(verdicts: Sequence[Verdict], steps: Sequence[dict[str, Any]], load_s: float,
                   stopped: bool) -> list[Verdict]:
    """A stress run judges its highest held step, whose rate the steps chose,
    not the stack.  While no step above it broke a KPI, a missed lower bound
    on the rate (``rps > 500`` judged at a 395 req/s step because the run
    stopped there) says nothing about the stack: that verdict is UNDECIDED
    (exit 4), not failed.  Every other verdict stays as evaluated, and so
    does a rate with no samples (a failed check, as everywhere)."""
    if not capacity_is_lower_bound(steps):
        return list(verdicts)
    if not stopped:
        note = f"the stress steps are still climbing ({load_s:.0f} s of load): no limit found yet"
    elif steps:
        note = (f"no stress step above the capacity broke a KPI in a valid measurement before the run stopped "
                f"({load_s:.0f} s of load): this rate is a lower bound, not a limit; a longer --run-time "
                "steps higher")
    else:
        note = (f"the run stopped after {load_s:.0f} s of load, before its first stress step ended (15 s): "
                "it found no limit; a longer --run-time steps higher")
    return [replace(v, undecided=True, note=note) if _is_rate_floor(v) and not v.passed and v.measured is not None
            else v for v in verdicts]


def _is_rate_floor(verdict: Verdict) -> bool:
    """``http_reqs`` (any tags) judged by a lower bound on its rate: ``rps > N``."""
    metric = verdict.key.split("{")[0]
    if metric != RATE_METRIC:
        return False
    expression = parse_expression(metric, verdict.expression)
    return expression.aggregation == "rps" and expression.op in (">", ">=")


def stack_cost(samples: Sequence[ResourceSample], requests: int, duration_s: float,
               floor: dict[str, Any] | None) -> dict[str, float | None]:
    """The stack's CPU per request over the judged window (the sampled CPU,
    % of one core summed over every stack process, times the window, over
    its requests), and its ratio to the machine's floor of the same run."""
    if not samples or requests <= 0 or duration_s <= 0:
        return {"stack_cpu_ms_per_request": None, "ratio_to_floor": None}
    average_cores = sum(s.total_cpu_percent for s in samples) / len(samples) / PERCENT_PER_CORE
    per_request_ms = average_cores * duration_s * 1000 / requests
    floor_ms = (floor or {}).get("cpu_ms_per_request")
    return {"stack_cpu_ms_per_request": round(per_request_ms, MEASURED_DECIMALS),
            "ratio_to_floor": round(per_request_ms / floor_ms, 2) if floor_ms else None}


def latency_side_by_side(snapshot: Snapshot) -> dict[str, dict[str, float | int | None]]:
    """Every request's service time and latency from its due time, in one
    table: the console and the report show both."""
    durations: dict[float, int] = {}
    latencies: dict[float, int] = {}
    for series in snapshot.requests.values():
        for target, source in ((durations, series.response_times), (latencies, series.latencies)):
            for value, count in source.items():
                target[value] = target.get(value, 0) + count
    table: dict[str, dict[str, float | int | None]] = {}
    for name, histogram in (("http_req_duration", durations), ("http_req_latency", latencies)):
        figures = {f"p{p}": histogram_percentile(histogram, p) for p in (50, 95, 99)}
        table[name] = {"count": sum(histogram.values()),
                       **{k: None if v is None else round(v, MEASURED_DECIMALS) for k, v in figures.items()},
                       "max": round(max(histogram), MEASURED_DECIMALS) if histogram else None}
    return table


def totals(snapshot: Snapshot) -> dict[str, float | None]:
    """The whole run's requests, failures, median and p95, from the same
    collector and buckets as the KPIs (not Locust's own approximations), so
    the report's figures cannot disagree with each other."""
    durations: dict[float, int] = {}
    for series in snapshot.requests.values():
        for value, count in series.response_times.items():
            durations[value] = durations.get(value, 0) + count
    median, p95 = histogram_percentile(durations, 50), histogram_percentile(durations, 95)
    return {"requests": sum(durations.values()), "failures": sum(s.failures for s in snapshot.requests.values()),
            "median_ms": None if median is None else round(median, MEASURED_DECIMALS),
            "p95_ms": None if p95 is None else round(p95, MEASURED_DECIMALS)}
