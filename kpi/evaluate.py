"""The KPI gate as a pure function: ``evaluate(snapshot, thresholds)``.

No Locust here: the plugin builds a Snapshot from what it collected (after
the warm-up) and this module judges it.  A metric with no samples is a
failed check, never a silent pass.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from kpi.percentiles import MEASURED_DECIMALS, histogram_percentile, list_percentile
from kpi.thresholds import Expression, Threshold, Thresholds

__all__ = ["MEASURED_DECIMALS", "Snapshot", "Verdict", "evaluate", "histogram_percentile", "list_percentile"]

COUNTERS = ("isolation_violations", "rbac_violations", "lost_writes", "workflow_failures", "dropped_iterations")
TIMINGS = ("http_req_duration", "http_req_latency")       # ms, per request
HTTP_METRICS = TIMINGS + ("http_reqs", "http_req_failed")
# A percentile resting on fewer than this many samples beyond it is marked
# low-confidence: p(99) needs 1,000 samples, p(95) 200, the median 20.
SAMPLES_BEYOND_PERCENTILE = 10


@dataclass
class RequestSeries:
    """One request name + method: histograms {ms: count} of its service
    times (http_req_duration) and of its latencies from the intended send
    time (http_req_latency), and its failure count."""
    response_times: dict[float, int] = field(default_factory=dict)
    failures: int = 0
    latencies: dict[float, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(self.response_times.values())

    def merge(self, other: RequestSeries) -> None:
        for key, count in other.response_times.items():
            self.response_times[key] = self.response_times.get(key, 0) + count
        for key, count in other.latencies.items():
            self.latencies[key] = self.latencies.get(key, 0) + count
        self.failures += other.failures


def low_confidence(expression: Expression, samples: int) -> str:
    """The note for a percentile resting on too few samples ('' when enough)."""
    percentile = 50.0 if expression.aggregation == "med" else expression.percentile
    if expression.aggregation not in ("p", "med") or percentile is None or percentile >= 100:
        return ""
    needed = math.ceil(SAMPLES_BEYOND_PERCENTILE / (1 - percentile / 100))
    return f"low confidence: {samples} samples, p({percentile:g}) wants {needed}" if samples < needed else ""


@dataclass
class Snapshot:
    duration_s: float
    # (method, name, tenant tag); the tag is "" for a request without a tenant
    requests: dict[tuple[str, str, str], RequestSeries] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    # metric -> (lo, hi): how far a value computed from short windows can be
    # trusted (kpi/uncertainty.py); a bound inside it leaves the KPI undecided.
    # None: the metric has intervals, but this window gives none.
    intervals: dict[str, tuple[float, float] | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    key: str
    expression: str
    measured: float | None
    passed: bool
    note: str = ""
    interval: tuple[float, float] | None = None
    # This run cannot say pass or fail: the interval straddles the bound, or
    # (kpi/windows.py unreached_rate) a stress run stopped below the rate.
    undecided: bool = False
    # The metric has intervals, but this window gave none (too short or sparse).
    interval_missing: bool = False

    def to_json(self) -> dict:
        return {"metric": self.key, "threshold": self.expression, "measured": self.measured,
                "passed": self.passed, "note": self.note,
                "interval": list(self.interval) if self.interval else None, "undecided": self.undecided}

    @property
    def result(self) -> str:
        """The word the console, the KPIs tab and the report show."""
        return "UNDECIDED" if self.undecided else ("PASS" if self.passed else "FAIL")


def _matching(snapshot: Snapshot, threshold: Threshold) -> RequestSeries:
    merged = RequestSeries()
    tags = dict(threshold.tags)
    for (method, name, tenant), series in snapshot.requests.items():
        if "name" in tags and tags["name"] != name:
            continue
        if "method" in tags and tags["method"].upper() != method.upper():
            continue
        if "tenant" in tags and tags["tenant"] != tenant:
            continue
        merged.merge(series)
    return merged


def _http_value(snapshot: Snapshot, threshold: Threshold, expression: Expression) -> float | None:
    series = _matching(snapshot, threshold)
    if series.count == 0:
        return None
    if threshold.metric == "http_reqs":
        return series.count / snapshot.duration_s if expression.aggregation == "rps" else float(series.count)
    if threshold.metric == "http_req_failed":
        return series.failures / series.count if expression.aggregation == "rate" else float(series.failures)
    histogram = series.latencies if threshold.metric == "http_req_latency" else series.response_times
    if expression.aggregation == "p":
        return histogram_percentile(histogram, expression.percentile or 0)
    if expression.aggregation == "med":
        return histogram_percentile(histogram, 50)
    if expression.aggregation == "min":
        return float(min(histogram))
    if expression.aggregation == "max":
        return float(max(histogram))
    return sum(k * v for k, v in histogram.items()) / series.count


def _sample_value(values: list[float], expression: Expression) -> float | None:
    if not values:
        return None
    aggregation = expression.aggregation
    if aggregation in ("value", "max"):
        return max(values) if aggregation == "max" or len(values) > 1 else values[0]
    if aggregation == "min":
        return min(values)
    if aggregation == "avg":
        return sum(values) / len(values)
    if aggregation == "med":
        return list_percentile(values, 50)
    return list_percentile(values, expression.percentile or 0)


def measure(snapshot: Snapshot, threshold: Threshold, expression: Expression) -> float | None:
    metric = threshold.metric
    if metric in HTTP_METRICS:
        if snapshot.duration_s <= 0:
            return None
        return _http_value(snapshot, threshold, expression)
    if metric in COUNTERS:
        value = snapshot.counters.get(metric)
        return None if value is None else float(value)
    if metric in snapshot.values:
        return snapshot.values[metric]
    return _sample_value(snapshot.samples.get(metric, []), expression)


def sample_count(snapshot: Snapshot, threshold: Threshold) -> int:
    """How many samples a metric's figure rests on."""
    if threshold.metric in TIMINGS:
        return _matching(snapshot, threshold).count
    return len(snapshot.samples.get(threshold.metric, []))


def evaluate(snapshot: Snapshot, thresholds: Thresholds) -> list[Verdict]:
    verdicts = []
    for threshold in thresholds.entries:
        for expression in threshold.expressions:
            measured = measure(snapshot, threshold, expression)
            if measured is None:
                verdicts.append(Verdict(threshold.key, expression.text, None, False, "no samples"))
                continue
            note = low_confidence(expression, sample_count(snapshot, threshold))
            interval = snapshot.intervals.get(threshold.metric)
            interval_missing = interval is None and threshold.metric in snapshot.intervals
            undecided = False
            if interval is not None:
                # Undecided when the bound splits the interval's ends or the
                # figure from either end (``==`` holds inside, not at the ends).
                undecided = len({expression.holds(interval[0]), expression.holds(measured),
                                 expression.holds(interval[1])}) > 1
                note = "; ".join(filter(None, [note, interval_note(interval, undecided)]))
            elif interval_missing:
                note = "; ".join(filter(None, [note, NO_INTERVAL]))
            verdicts.append(Verdict(threshold.key, expression.text, round(measured, MEASURED_DECIMALS),
                                    expression.holds(measured), note, interval, undecided, interval_missing))
    return verdicts


#: The note of a figure that has intervals but got none (kpi/uncertainty.py).
NO_INTERVAL = "no 95 % interval (under 5 s in a window, or too few requests): judged on this figure alone"


def interval_note(interval: tuple[float, float], undecided: bool) -> str:
    low, high = interval
    return f"95 % interval {low:g}-{high:g}" + (": the bound is inside it, undecided" if undecided else "")


def undecided_cause(verdicts: list[Verdict]) -> str:
    """Why a run with undecided KPIs is INCONCLUSIVE ('' when none is): the
    interval that holds the bound, else the verdict's note (a stress run's
    unreached rate, kpi/windows.py unreached_rate)."""
    return "; ".join(f"{v.key} {v.measured:g} ({interval_note(v.interval, False)}) is too close to "
                     f"`{v.expression}` to decide in one run" if v.interval else
                     f"{v.key} {v.measured:g} against `{v.expression}`: {v.note}"
                     for v in verdicts if v.undecided)


def measured_text(verdict: Verdict) -> str:
    """The measured figure as the console, the tab and the report show it;
    a low-confidence percentile carries its note."""
    if verdict.measured is None:
        return "no samples"
    return f"{verdict.measured:g}" + (f" ({verdict.note})" if verdict.note else "")


def format_table(verdicts: list[Verdict]) -> str:
    rows = [("KPI", "threshold", "measured", "result")]
    for v in verdicts:
        rows.append((v.key, v.expression, measured_text(v), v.result))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [" | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)
