"""How far one run's ratio of two windowed p95s can be trusted.

``tenant_p95_ratio`` divides a quiet tenant's p95 during the burst (20 s
by default) by its p95 before it (10 s).  On a shared 2-core machine a
few seconds of the machine's own noise in either window move that ratio
as much as the burst does: on the night of 2026-11-24 the same code read
1.85-2.97 in eight runs, and two of its three passes came from a "before"
window with several slow seconds in it, which raised the denominator.

So the ratio gets an interval: a block bootstrap over whole seconds.  Each
resample draws, with replacement, as many seconds as each window has, from
that window's seconds, and takes the ratio of the resampled windows' p95s.
A second is the block because the machine's noise comes in runs of
seconds, not request by request: resampling requests would call a window
with three slow seconds precise.  The same draw of seconds serves every
quiet tenant, so the interval of the worst ratio keeps their common
moments together.  The draw is seeded: the same run gives the same
interval.

The gate (kpi/evaluate.py) calls a KPI whose interval straddles its bound
undecided, and the run INCONCLUSIVE rather than PASS or FAIL on noise.

Pure, numpy only; no Locust.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from kpi.percentiles import MEASURED_DECIMALS

#: Resamples of the bootstrap.  Between 20 seeds on synthetic windows (150
#: requests a second, 10 s + 20 s) the ends of 2,000 moved by 0.2-1 %, and
#: by up to 6 % with three slow seconds before the burst; the seed is fixed,
#: so a run's interval does not move between readings.
RESAMPLES = 2000
#: The interval's coverage: the middle 95 % of the resampled ratios.
LEVEL = 0.95
#: Fewer seconds than this in either window give no interval: a handful of
#: seconds resampled says nothing about the next handful.
MIN_SECONDS = 5
#: The share of resamples that must have a ratio (a request from every
#: quiet tenant in both windows) for the interval to say anything.
MIN_KEPT = 0.9
SEED = 20261125

#: One window of one tenant: second -> service-time histogram {ms: count}.
Window = Mapping[int, Mapping[float, int]]


def _matrix(window: Window, seconds: Sequence[int], columns: Mapping[float, int]) -> np.ndarray:
    """seconds x values counts; a second without requests is a row of zeros."""
    counts = np.zeros((len(seconds), len(columns)))
    for row, second in enumerate(seconds):
        for value, count in window.get(second, {}).items():
            counts[row, columns[value]] += count
    return counts


def _percentiles(counts: np.ndarray, values: np.ndarray, percentile: float) -> np.ndarray:
    """Per row of resampled counts, the value at ``percentile`` by the same
    rule as kpi.percentiles.histogram_percentile (the first value whose
    cumulative count reaches ceil(total * p / 100)); NaN for an empty row."""
    cumulative = np.cumsum(counts, axis=1)
    totals = cumulative[:, -1]
    ranks = np.ceil(totals * percentile / 100.0)
    positions = (cumulative < ranks[:, None]).sum(axis=1)
    found = values[np.minimum(positions, len(values) - 1)]
    return np.where(totals > 0, found, np.nan)


def worst_ratio_interval(tenants: Sequence[tuple[Window, Window]], before_seconds: Sequence[int],
                         during_seconds: Sequence[int], percentile: float = 95.0,
                         resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float] | None:
    """The interval (lo, hi) of the worst tenant's p95 during over p95 before,
    from ``tenants`` = [(before window, during window)] over the given seconds.

    A resample that leaves a tenant no request in a window has no ratio and
    is dropped.  None (no interval) with fewer than MIN_SECONDS in a window,
    a tenant with no request at all, or fewer than MIN_KEPT of the resamples
    left.  The interval always holds the ratio of the run itself (the draw
    that takes each second once): a percentile interval of a skewed worst-of
    can lie beside it, and the gate must not call a KPI decided on one side
    of its bound while its own figure is on the other."""
    if not tenants or len(before_seconds) < MIN_SECONDS or len(during_seconds) < MIN_SECONDS:
        return None
    rng = np.random.default_rng(seed)
    # How often each second is drawn, per resample: one draw for all tenants.
    # Row 0 is the run itself: each second once.
    draw_before = np.vstack([np.ones(len(before_seconds)), rng.multinomial(
        len(before_seconds), [1 / len(before_seconds)] * len(before_seconds), resamples)])
    draw_during = np.vstack([np.ones(len(during_seconds)), rng.multinomial(
        len(during_seconds), [1 / len(during_seconds)] * len(during_seconds), resamples)])
    worst = np.full(resamples + 1, -np.inf)
    for before, during in tenants:
        values = sorted({value for window in (before, during) for histogram in window.values() for value in histogram})
        if not values:
            return None
        columns = {value: index for index, value in enumerate(values)}
        axis = np.array(values)
        p_before = _percentiles(draw_before @ _matrix(before, before_seconds, columns), axis, percentile)
        p_during = _percentiles(draw_during @ _matrix(during, during_seconds, columns), axis, percentile)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(p_before > 0, p_during / p_before, np.nan)
        worst = np.maximum(worst, ratio)          # NaN (no ratio) stays NaN
    if np.isnan(worst[0]):
        return None
    kept = worst[1:][~np.isnan(worst[1:])]
    if len(kept) < MIN_KEPT * resamples:
        return None
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(kept, [tail, 100 - tail])
    low, high = min(low, worst[0]), max(high, worst[0])
    return round(float(low), MEASURED_DECIMALS), round(float(high), MEASURED_DECIMALS)
