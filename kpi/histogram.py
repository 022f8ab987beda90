"""Relative-precision buckets for timings: every value lands in a bucket no
wider than 2 % of it, and reads back as the bucket's geometric middle, so a
figure is off by at most 1 % (1 ms integer buckets read 3.4 ms as 3).

Buckets are sparse {index: count} dicts, so merging the workers' histograms
on the master is a plain sum, exact.  Pure; no Locust.
"""
from __future__ import annotations

import math

GROWTH = 1.02                       # each bucket is 2 % wider than the one before
MAX_RELATIVE_ERROR = math.sqrt(GROWTH) - 1     # < 1 %: the middle of a bucket to either edge
_LOG_GROWTH = math.log(GROWTH)
ZERO_BUCKET = -1                    # below 1 microsecond
US_PER_MS = 1000.0


def bucket(value_ms: float) -> int:
    """The bucket of a timing in milliseconds (kept in microseconds)."""
    value_us = value_ms * US_PER_MS
    if value_us < 1:
        return ZERO_BUCKET
    return math.floor(math.log(value_us) / _LOG_GROWTH)


def bucket_value(index: int) -> float:
    """The value (ms) a bucket reads back as: its geometric middle."""
    if index == ZERO_BUCKET:
        return 0.0
    return GROWTH ** (index + 0.5) / US_PER_MS


def values(buckets: dict[int, int]) -> dict[float, int]:
    """{bucket index: count} -> {value in ms: count}, for percentiles."""
    merged: dict[float, int] = {}
    for index, count in buckets.items():
        value = bucket_value(int(index))
        merged[value] = merged.get(value, 0) + count
    return merged
