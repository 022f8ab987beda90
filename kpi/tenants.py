"""Per-tenant figures and the noisy profile's fairness metrics, as pure
functions over snapshots (no Locust).

Every request carries its persona's tenant tag (``tenant-1``, ``tenant-2``:
kpi/seed.py) in its Locust context; the collector keeps it with the
request, so thresholds filter on it (``http_req_duration{tenant:tenant-2}``)
and the console, summary.json, the KPIs tab and the report show one row
per tenant from ``tenant_rows``, one computation for all of them.

The noisy profile (kpi/shapes.py) has one tenant burst while the others keep
their steady mix.  Its fairness metrics:

* ``tenant_p95_ratio``: each quiet tenant's p95 service time during the
  burst over its own p95 before it; the worst quiet tenant's ratio;
* ``quiet_429``: the quiet tenants' requests refused with 429 (whole run);
* ``noisy_429``: the noisy tenant's (expected: its personas do not count
  them as failures, so they stay out of ``http_req_failed``);
* ``burst_reached``: the noisy tenant's request rate during the burst over
  its own rate before it: the burst the quiet tenants were judged under
  (``--burst-multiple`` asks for one; an overloaded generator or a stalled
  noisy tenant reaches less, and the fairness figures then prove less).
  Its rows also give the busiest second of the burst: a burst sent in
  waves (users that fell behind catching up together, kpi/pacing.py) shows
  a busiest second far above the burst's mean rate.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kpi.evaluate import RequestSeries, Snapshot
from kpi.percentiles import MEASURED_DECIMALS, histogram_percentile

#: The request context key of the tenant tag (the personas set it).
TENANT_CONTEXT_KEY = "apprun_tenant"
#: Counter of a tenant's 429 answers: "http_429|tenant-2".
REFUSED_COUNTER = "http_429"
NO_TENANT = ""
#: How a row names the requests without a tenant tag.
UNTAGGED = "(none)"
BEFORE, BURST, AFTER = "before", "burst", "after"
#: The fairness KPI: the worst quiet tenant's p95 during the burst over before it.
RATIO_METRIC = "tenant_p95_ratio"


@dataclass(frozen=True)
class NoisyRun:
    """The noisy profile's run: which tenant bursts, and when it did
    ([start, end) epoch seconds; None before the burst began)."""
    tenant: str
    burst: tuple[int, int] | None = None


def refused_counter(tenant: str) -> str:
    return f"{REFUSED_COUNTER}|{tenant}"


def refusals(counters: Mapping[str, int]) -> dict[str, int]:
    """tenant -> its 429 answers, from a snapshot's counters."""
    prefix = REFUSED_COUNTER + "|"
    return {name[len(prefix):]: count for name, count in counters.items() if name.startswith(prefix)}


def by_tenant(snapshot: Snapshot) -> dict[str, RequestSeries]:
    """Every tenant's requests merged into one series."""
    merged: dict[str, RequestSeries] = {}
    for (_method, _name, tenant), series in snapshot.requests.items():
        merged.setdefault(tenant, RequestSeries()).merge(series)
    return merged


def tenant_key(row_name: str) -> str:
    """The tenant tag a row's name stands for (the untagged row's is "")."""
    return NO_TENANT if row_name == UNTAGGED else row_name


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, MEASURED_DECIMALS)


def p95_ratio(before_ms: float | None, during_ms: float | None) -> float | None:
    """p95 during the burst over p95 before it; None without both."""
    if before_ms is None or during_ms is None or before_ms <= 0:
        return None
    return _rounded(during_ms / before_ms)


def _rate(series: RequestSeries | None, snapshot: Snapshot | None) -> float | None:
    """Requests per second of one tenant over a window; None without it."""
    if snapshot is None:
        return None
    return _rounded((series.count if series is not None else 0) / snapshot.duration_s)


def tenant_rows(judged: Snapshot, counters: Mapping[str, int], noisy: NoisyRun | None = None,
                before: Snapshot | None = None, during: Snapshot | None = None,
                burst_seconds: Mapping[str, Mapping[int, int]] | None = None) -> list[dict]:
    """One row per tenant over the judged window: requests, failures, p50,
    p95 and p99 of the service time, p95 from the due time; its 429s over
    the whole run (``counters``); and in the noisy profile its role, its
    p95 and request rate before and during the burst, and its busiest
    second of the burst (``burst_seconds``: tenant -> {second: requests})."""
    series = by_tenant(judged)
    refused = refusals(counters)
    before_series = by_tenant(before) if before is not None else {}
    during_series = by_tenant(during) if during is not None else {}
    rows = []
    for tenant in sorted(set(series) | set(refused)):
        current = series.get(tenant, RequestSeries())
        row: dict = {
            "tenant": tenant or UNTAGGED,
            "role": "" if noisy is None else ("noisy" if tenant == noisy.tenant else "quiet"),
            "requests": current.count,
            "failures": current.failures,
            "refused_429": refused.get(tenant, 0),
            **{f"p{p}_ms": _rounded(histogram_percentile(current.response_times, p)) for p in (50, 95, 99)},
            "latency_p95_ms": _rounded(histogram_percentile(current.latencies, 95)),
        }
        if noisy is not None:
            row["p95_before_ms"] = _rounded(histogram_percentile(
                before_series.get(tenant, RequestSeries()).response_times, 95))
            row["p95_burst_ms"] = _rounded(histogram_percentile(
                during_series.get(tenant, RequestSeries()).response_times, 95))
            row["p95_ratio"] = p95_ratio(row["p95_before_ms"], row["p95_burst_ms"])
            row["rps_before"] = _rate(before_series.get(tenant), before)
            row["rps_burst"] = _rate(during_series.get(tenant), during)
            seconds = (burst_seconds or {}).get(tenant, {})
            row["peak_rps_burst"] = max(seconds.values(), default=0) if during is not None else None
        rows.append(row)
    return rows


def fairness_values(rows: list[dict], noisy: NoisyRun) -> dict[str, float]:
    """The gate's fairness metrics from the tenant rows (so the table and the
    KPIs cannot disagree).  ``tenant_p95_ratio`` is left out (no samples)
    until every quiet tenant has a ratio."""
    quiet = [row for row in rows if row["role"] == "quiet"]
    values = {"quiet_429": float(sum(row["refused_429"] for row in quiet)),
              "noisy_429": float(sum(row["refused_429"] for row in rows if row["role"] == "noisy"))}
    ratios = [row.get("p95_ratio") for row in quiet]
    if quiet and all(ratio is not None for ratio in ratios):
        values[RATIO_METRIC] = max(ratios)  # type: ignore[type-var]
    multiple = next((burst_reached(row) for row in rows if row["role"] == "noisy"), None)
    if multiple is not None:
        values["burst_reached"] = multiple
    return values


def burst_reached(row: Mapping[str, Any]) -> float | None:
    """A tenant's request rate during the burst over its rate before it;
    None without both (or with no requests before)."""
    before, during = row.get("rps_before"), row.get("rps_burst")
    if not before or during is None:
        return None
    return _rounded(during / before)


def burst_phase(elapsed_s: float, burst_after_s: float, burst_for_s: float) -> str:
    """Where the noisy profile is, ``elapsed_s`` after the load began."""
    if elapsed_s < burst_after_s:
        return BEFORE
    return BURST if elapsed_s < burst_after_s + burst_for_s else AFTER


def burst_users(steady_users: int, weights: Mapping[str, float], noisy_tenant: str, multiple: float) -> int:
    """Extra users that take the noisy tenant to ``multiple`` times its share
    of the steady users (its classes' weight over all weights): it then
    sends ``multiple`` times its steady rate."""
    total = sum(weights.values())
    share = steady_users * weights.get(noisy_tenant, 0) / total if total else 0.0
    return max(1, math.ceil(share * (multiple - 1) - 1e-9)) if multiple > 1 else 0


def text(row: dict) -> str:
    """One row as the console and the KPIs tab show it."""
    parts = [f"{row['requests']} requests, {row['failures']} failed, {row['refused_429']} x 429 (whole run)",
             f"p50 {row['p50_ms']} ms, p95 {row['p95_ms']} ms, p99 {row['p99_ms']} ms",
             f"p95 from the due time {row['latency_p95_ms']} ms"]
    if row["role"]:
        parts.append(f"{row['role']}: p95 before the burst {row['p95_before_ms']} ms, during it "
                     f"{row['p95_burst_ms']} ms, ratio {row['p95_ratio']}")
        parts.append(f"{row['rps_before']} req/s before the burst, {row['rps_burst']} during it "
                     f"(busiest second {row['peak_rps_burst']})")
    if row["role"] == "noisy":
        parts.append(f"burst reached {burst_reached(row)}x its rate before")
    return "; ".join(parts)


def noisy_settings_error(burst_after_s: float, burst_for_s: float, multiple: float, warmup_s: float,
                         run_time_s: float | None) -> str | None:
    """Why the noisy profile's options cannot measure fairness (None: they can)."""
    if multiple <= 1:
        return f"--burst-multiple {multiple:g}: a burst needs a multiple above 1"
    if burst_for_s <= 0:
        return f"--burst-for {burst_for_s:g}: the burst needs a duration"
    if burst_after_s <= warmup_s:
        return (f"--burst-after {burst_after_s:g} s is within the warm-up ({warmup_s:g} s): the quiet tenants "
                "would have no p95 before the burst to compare with")
    if run_time_s and run_time_s < burst_after_s + burst_for_s:
        return (f"the run time ({run_time_s:g} s: --run-time, else the profile's own) ends before the burst does "
                f"({burst_after_s:g} + {burst_for_s:g} s after the load begins)")
    return None
