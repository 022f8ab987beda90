"""Percentiles and the one rounding of every measured figure."""
from __future__ import annotations

import math

# Every measured figure is rounded once, here, to this many decimals; the
# console, summary.json, the report and the stress steps all show this value.
MEASURED_DECIMALS = 3


def histogram_percentile(histogram: dict[int, int], percentile: float) -> float | None:
    total = sum(histogram.values())
    if total == 0:
        return None
    rank = math.ceil(total * percentile / 100.0)
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return float(value)
    return float(max(histogram))


def list_percentile(values: list[float], percentile: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(len(ordered) * percentile / 100.0))
    return float(ordered[rank - 1])
