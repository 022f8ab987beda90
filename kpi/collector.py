"""Per-second buckets of request timings and violation counters.

Kept per second so the warm-up can be cut off and charts drawn over time.
Buckets are plain dicts so workers can ship them to the master
(``report_to_master``) where they are merged: every KPI is computed on the
master from the combined figures.
"""
from __future__ import annotations

import threading
from typing import Any

from kpi.evaluate import RequestSeries, Snapshot


class Collector:
    def __init__(self) -> None:
        # second -> {"method name": [histogram, failures]}
        self.buckets: dict[int, dict[str, list[Any]]] = {}
        self.counters: dict[int, dict[str, int]] = {}
        # second -> {"gauge|where": [values]}: the generator's own figures (kpi/validity.py)
        self.gauges: dict[int, dict[str, list[float]]] = {}
        self._lock = threading.Lock()

    def request(self, second: int, method: str, name: str, response_time_ms: float, failed: bool) -> None:
        key = f"{method} {name}"
        with self._lock:
            entry = self.buckets.setdefault(second, {}).setdefault(key, [{}, 0])
            rounded = str(int(round(response_time_ms)))
            entry[0][rounded] = entry[0].get(rounded, 0) + 1
            if failed:
                entry[1] += 1

    def count(self, second: int, counter: str, amount: int = 1) -> None:
        with self._lock:
            bucket = self.counters.setdefault(second, {})
            bucket[counter] = bucket.get(counter, 0) + amount

    def gauge(self, second: int, key: str, value: float) -> None:
        with self._lock:
            self.gauges.setdefault(second, {}).setdefault(key, []).append(value)

    def gauges_between(self, start_s: int, end_s: int) -> dict[str, list[float]]:
        """Every gauge's values in [start_s, end_s)."""
        merged: dict[str, list[float]] = {}
        with self._lock:
            for second, gauges in self.gauges.items():
                if start_s <= second < end_s:
                    for key, values in gauges.items():
                        merged.setdefault(key, []).extend(values)
        return merged

    def first_second(self, since: int) -> int | None:
        """The first second at or after ``since`` that has a request."""
        with self._lock:
            return min((second for second in self.buckets if second >= since), default=None)

    def drain(self) -> dict[str, Any]:
        """Everything collected since the last drain (for report_to_master)."""
        with self._lock:
            data = {"buckets": self.buckets, "counters": self.counters, "gauges": self.gauges}
            self.buckets, self.counters, self.gauges = {}, {}, {}
        return data

    def merge(self, data: dict[str, Any]) -> None:
        with self._lock:
            for second, entries in data.get("buckets", {}).items():
                bucket = self.buckets.setdefault(int(second), {})
                for key, (histogram, failures) in entries.items():
                    entry = bucket.setdefault(key, [{}, 0])
                    for value, count in histogram.items():
                        entry[0][value] = entry[0].get(value, 0) + count
                    entry[1] += failures
            for second, counters in data.get("counters", {}).items():
                bucket = self.counters.setdefault(int(second), {})
                for name, amount in counters.items():
                    bucket[name] = bucket.get(name, 0) + amount
            for second, gauges in data.get("gauges", {}).items():
                bucket = self.gauges.setdefault(int(second), {})
                for key, values in gauges.items():
                    bucket.setdefault(key, []).extend(values)

    def snapshot(self, start_s: int, end_s: int) -> Snapshot:
        """Requests in [start_s, end_s); violation counters over the whole run
        (a violation during warm-up is still a violation)."""
        snapshot = Snapshot(duration_s=max(1, end_s - start_s))
        with self._lock:
            for second, entries in self.buckets.items():
                if not start_s <= second < end_s:
                    continue
                for key, (histogram, failures) in entries.items():
                    method, _, name = key.partition(" ")
                    series = snapshot.requests.setdefault((method, name), RequestSeries())
                    series.merge(RequestSeries({int(k): v for k, v in histogram.items()}, failures))
            totals: dict[str, int] = {}
            for counters in self.counters.values():
                for name, amount in counters.items():
                    totals[name] = totals.get(name, 0) + amount
        snapshot.counters = totals
        return snapshot

    def per_second(self) -> list[tuple[int, int, int, dict[int, int]]]:
        """(second, requests, failures, merged histogram) in time order, for charts."""
        rows = []
        with self._lock:
            for second in sorted(self.buckets):
                histogram: dict[int, int] = {}
                failures = 0
                for entry_histogram, entry_failures in self.buckets[second].values():
                    failures += entry_failures
                    for value, count in entry_histogram.items():
                        histogram[int(value)] = histogram.get(int(value), 0) + count
                rows.append((second, sum(histogram.values()), failures, histogram))
        return rows
