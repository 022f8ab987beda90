"""Per-second buckets of request timings and violation counters.

Kept per second so the warm-up can be cut off and charts drawn over time.
Buckets are plain dicts so workers can ship them to the master
(``report_to_master``) where they are merged: every KPI is computed on the
master from the combined figures.
"""
from __future__ import annotations

import threading
from typing import Any

from kpi import histogram
from kpi.evaluate import RequestSeries, Snapshot


class Collector:
    def __init__(self) -> None:
        # second -> {"tenant method name": [duration buckets, failures, latency buckets]}
        # (buckets: kpi/histogram.py, {str(index): count} so they ship as JSON keys;
        # the tenant tag and the method have no spaces, the tenant may be "")
        self.buckets: dict[int, dict[str, list[Any]]] = {}
        self.counters: dict[int, dict[str, int]] = {}
        # Grows with every request recorded and every worker's drain merged:
        # whoever keeps a figure computed from the buckets knows when it is
        # stale (kpi/windows.py).  A change count, not a request count.
        self.changes = 0
        # (question, answer) of the last ratio interval (kpi/windows.py's ratio_interval).
        self.last_interval: tuple[Any, Any] | None = None
        # second -> {"gauge|where": [values]}: the generator's own figures (kpi/validity.py)
        self.gauges: dict[int, dict[str, list[float]]] = {}
        self._lock = threading.Lock()

    def request(self, second: int, method: str, name: str, response_time_ms: float, failed: bool,
                latency_ms: float | None = None, tenant: str = "") -> None:
        """One request: its service time (``http_req_duration``) and its
        latency from when it was due (``http_req_latency``; the service time
        when it had no due time), under its persona's tenant tag."""
        key = request_key(tenant, method, name)
        latency = response_time_ms if latency_ms is None else latency_ms
        with self._lock:
            self.changes += 1
            entry = self.buckets.setdefault(second, {}).setdefault(key, [{}, 0, {}])
            _add(entry[0], str(histogram.bucket(response_time_ms)), 1)
            _add(entry[2], str(histogram.bucket(latency)), 1)
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
        """Add a worker's drain: bucket counts, failures and counters are
        summed, so the master's figures are exact."""
        with self._lock:
            self.changes += 1
            for second, entries in data.get("buckets", {}).items():
                bucket = self.buckets.setdefault(int(second), {})
                for key, (durations, failures, latencies) in entries.items():
                    entry = bucket.setdefault(key, [{}, 0, {}])
                    for index, count in durations.items():
                        _add(entry[0], index, count)
                    for index, count in latencies.items():
                        _add(entry[2], index, count)
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
        """Requests in [start_s, end_s); counters over the whole run (a
        violation during warm-up is still a violation)."""
        snapshot = Snapshot(duration_s=max(1, end_s - start_s))
        with self._lock:
            for second, entries in self.buckets.items():
                if not start_s <= second < end_s:
                    continue
                for key, (durations, failures, latencies) in entries.items():
                    series = snapshot.requests.setdefault(split_key(key), RequestSeries())
                    series.merge(RequestSeries(histogram.values(durations), failures, histogram.values(latencies)))
            totals: dict[str, int] = {}
            for counters in self.counters.values():
                for name, amount in counters.items():
                    totals[name] = totals.get(name, 0) + amount
        snapshot.counters = totals
        return snapshot

    def per_second(self) -> list[tuple[int, int, int, dict[float, int], dict[float, int]]]:
        """(second, requests, failures, durations, latencies) in time order,
        the histograms as {ms: count}, for charts."""
        rows = []
        with self._lock:
            for second in sorted(self.buckets):
                durations: dict[str, int] = {}
                latencies: dict[str, int] = {}
                failures = 0
                for entry_durations, entry_failures, entry_latencies in self.buckets[second].values():
                    failures += entry_failures
                    for index, count in entry_durations.items():
                        _add(durations, index, count)
                    for index, count in entry_latencies.items():
                        _add(latencies, index, count)
                rows.append((second, sum(durations.values()), failures, histogram.values(durations),
                             histogram.values(latencies)))
        return rows

    def per_second_by_tenant(self, start_s: int | None = None,
                             end_s: int | None = None) -> dict[str, list[tuple[int, dict[float, int]]]]:
        """tenant -> [(second, service-time histogram {ms: count})] in time
        order, for the report's per-tenant chart; with ``start_s`` and
        ``end_s``, the seconds in [start_s, end_s) only."""
        by_tenant: dict[str, dict[int, dict[str, int]]] = {}
        with self._lock:
            for second, entries in self.buckets.items():
                if (start_s is not None and second < start_s) or (end_s is not None and second >= end_s):
                    continue
                for key, (durations, _failures, _latencies) in entries.items():
                    merged = by_tenant.setdefault(split_key(key)[2], {}).setdefault(second, {})
                    for index, count in durations.items():
                        _add(merged, index, count)
        return {tenant: [(second, histogram.values(seconds[second])) for second in sorted(seconds)]
                for tenant, seconds in sorted(by_tenant.items())}


def request_key(tenant: str, method: str, name: str) -> str:
    return f"{tenant} {method} {name}"


def split_key(key: str) -> tuple[str, str, str]:
    """A bucket key -> (method, name, tenant), the Snapshot's request key."""
    tenant, method, name = key.split(" ", 2)
    return method, name, tenant


def _add(buckets: dict[str, int], index: str, count: int) -> None:
    buckets[index] = buckets.get(index, 0) + count
