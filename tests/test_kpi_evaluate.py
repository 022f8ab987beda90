"""The KPI gate as a pure function, without Locust."""
from __future__ import annotations

import pytest

from kpi.collector import Collector
from kpi.evaluate import RequestSeries, Snapshot, evaluate
from kpi.histogram import bucket
from kpi.thresholds import ThresholdsError, parse


def snapshot() -> Snapshot:
    fast = RequestSeries({10: 90, 300: 10}, failures=1)   # p95 = 300
    slow = RequestSeries({500: 10})
    return Snapshot(duration_s=10, requests={("GET", "/list", "tenant-1"): fast, ("POST", "/create", "tenant-2"): slow},
                    samples={"sut_memory_mb": [300, 500, 400]}, counters={"rbac_violations": 0,
                                                                           "isolation_violations": 2},
                    values={"auth_checks_per_s": 5000})


def verdicts(metrics: dict) -> list:
    return evaluate(snapshot(), parse({"metrics": metrics}))


@pytest.mark.parametrize("expression,passed", [
    ("p(95) < 500", False), ("p(95) <= 500", True), ("max == 500", True), ("min > 5", True),
    ("avg < 30", False), ("avg > 80", True), ("med != 10", False), ("p(50) >= 10", True),
])
def test_duration_operators(expression, passed) -> None:
    assert [v.passed for v in verdicts({"http_req_duration": [expression]})] == [passed]


def test_rates_counters_samples_values() -> None:
    results = verdicts({"http_reqs": ["rps > 10", "count == 110"], "http_req_failed": ["rate < 0.01"],
                        "sut_memory_mb": ["max < 512", "avg < 400"], "rbac_violations": ["count == 0"],
                        "isolation_violations": ["count == 0"], "auth_checks_per_s": ["value > 1000"]})
    assert [(v.expression, v.passed) for v in results] == [
        ("rps > 10", True), ("count == 110", True), ("rate < 0.01", True), ("max < 512", True),
        ("avg < 400", False), ("count == 0", True), ("count == 0", False), ("value > 1000", True)]


def test_per_route_filters() -> None:
    results = verdicts({"http_req_duration{name:/list}": ["p(95) < 400"],
                        "http_req_duration{name:/create,method:POST}": ["p(95) < 400"],
                        "http_req_duration{method:get}": ["max < 400"]})
    assert [v.passed for v in results] == [True, False, True]


def test_missing_samples_fail() -> None:
    results = verdicts({"wasm_cold_start_ms": ["max < 100"], "http_req_duration{name:/nothing}": ["p(95) < 1"],
                        "lost_writes": ["count == 0"]})
    assert all(not v.passed and v.note == "no samples" for v in results)


def test_warmup_is_excluded() -> None:
    collector = Collector()
    for second in range(100, 110):
        collector.request(second, "GET", "/x", 1000 if second < 105 else 5, failed=False)
    judged = evaluate(collector.snapshot(105, 110), parse({"metrics": {"http_req_duration": ["max < 10"]}}))
    assert judged[0].passed and judged[0].measured == pytest.approx(5, rel=0.01)
    seven = str(bucket(7))
    collector.merge({"buckets": {"106": {" GET /x": [{seven: 3}, 1, {seven: 3}]}},
                     "counters": {"101": {"lost_writes": 2}}})
    merged = collector.snapshot(105, 110)
    assert merged.requests[("GET", "/x", "")].failures == 1 and merged.counters["lost_writes"] == 2


@pytest.mark.parametrize("data", [
    {"metrics": {"http_req_durations": ["p(95) < 1"]}},          # typo in metric
    {"metrics": {"http_req_duration": ["p95 < 1"]}},              # unknown aggregation
    {"metrics": {"http_req_duration": ["rps > 1"]}},              # aggregation of another metric
    {"metrics": {"http_req_duration": ["p(95) << 1"]}},
    {"metrics": {"http_req_duration": ["p(150) < 1"]}},
    {"metrics": {"sut_memory_mb{name:/x}": ["max < 1"]}},         # untaggable
    {"metrics": {"http_req_duration{route:/x}": ["max < 1"]}},    # unknown tag
    {"metrics": {}}, {"metric": {}}, [], {"metrics": {"http_reqs": []}},
    {"warmup_s": -1, "metrics": {"http_reqs": ["rps > 1"]}},
])
def test_malformed_thresholds_are_errors(data) -> None:
    with pytest.raises(ThresholdsError):
        parse(data)


def test_shipped_thresholds_file_parses() -> None:
    from kpi.thresholds import load

    thresholds = load("thresholds.yaml")
    assert thresholds.target("http_reqs", "rps") == 500 and thresholds.warmup_s == 10
