"""Tenant tags and the noisy profile's fairness metrics (kpi/tenants.py),
as pure functions over hand-made collectors: tag parsing and filtering, the
per-tenant rows, tenant_p95_ratio, quiet_429 and noisy_429, the burst's
timing and size, and the personas' handling of expected 429s."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from kpi.collector import Collector
from kpi.evaluate import evaluate
from kpi.seed import SEED_USERS_BY_NAME, TENANT_1, TENANT_2, tenant_admin, tenant_tag
from kpi.state import RunState
from kpi.tenants import (
    AFTER,
    BEFORE,
    BURST,
    NoisyRun,
    burst_phase,
    burst_users,
    fairness_values,
    noisy_settings_error,
    p95_ratio,
    refusals,
    refused_counter,
    tenant_rows,
)
from kpi.tenants import text as tenants_text
from kpi.thresholds import ThresholdsError, parse
from kpi.webui import tab_rows
from kpi.windows import RunFigures, snapshot_between, tenant_table
from locustfiles.refusals import ExpectedRefusals, over_budget


def traffic(collector: Collector, seconds: range, tenant: str, ms: float, per_second: int = 20,
            failed_every: int = 0) -> Collector:
    for second in seconds:
        for i in range(per_second):
            collector.request(second, "GET", "/data/products [list]", ms, failed=bool(failed_every)
                              and i % failed_every == 0, tenant=tenant)
    return collector


def test_the_seed_tenants_have_readable_tags() -> None:
    assert tenant_tag(TENANT_1) == "tenant-1" and tenant_tag(TENANT_2) == "tenant-2"
    assert tenant_tag("33333333-3333-3333-3333-333333333333") == "33333333-3333-3333-3333-333333333333"
    assert SEED_USERS_BY_NAME["charlie"].tenant == "tenant-2" and SEED_USERS_BY_NAME["bob"].role == "user"
    assert tenant_admin(TENANT_1).name == "alice" and tenant_admin(TENANT_2).name == "charlie"


def test_a_tenant_tag_parses_alone_and_with_the_other_tags() -> None:
    thresholds = parse({"metrics": {
        "http_req_duration{tenant:tenant-2}": ["p(95) < 200"],
        "http_req_failed{tenant:tenant-1,name:/data/products [list]}": ["rate < 0.01"]}})
    assert [e.tags for e in thresholds.entries] == [
        (("tenant", "tenant-2"),), (("name", "/data/products [list]"), ("tenant", "tenant-1"))]
    with pytest.raises(ThresholdsError, match="tenant:<tenant tag"):
        parse({"metrics": {"http_req_duration{customer:tenant-2}": ["p(95) < 200"]}})
    with pytest.raises(ThresholdsError, match="cannot be filtered"):
        parse({"metrics": {"quiet_429{tenant:tenant-1}": ["count == 0"]}})


def test_the_fairness_metrics_parse_with_their_aggregations_only() -> None:
    parse({"metrics": {"tenant_p95_ratio": ["value < 2"], "quiet_429": ["count == 0"], "noisy_429": ["count > 0"]}})
    with pytest.raises(ThresholdsError, match="unknown aggregation"):
        parse({"metrics": {"tenant_p95_ratio": ["p(95) < 2"]}})


def test_a_tenant_tag_judges_that_tenants_requests_only() -> None:
    collector = traffic(traffic(Collector(), range(100, 110), "tenant-1", 5), range(100, 110), "tenant-2", 500,
                        failed_every=4)
    verdicts = {(v.key, v.expression): v for v in evaluate(collector.snapshot(100, 110), parse({"metrics": {
        "http_req_duration{tenant:tenant-1}": ["p(95) < 200"], "http_req_duration{tenant:tenant-2}": ["p(95) < 200"],
        "http_req_failed{tenant:tenant-1}": ["rate < 0.01"], "http_req_failed{tenant:tenant-2}": ["rate < 0.01"],
        "http_reqs{tenant:tenant-1}": ["rps > 19"], "http_req_duration{tenant:tenant-3}": ["p(95) < 200"],
        "http_req_duration": ["p(95) < 200"]}}))}
    assert verdicts[("http_req_duration{tenant:tenant-1}", "p(95) < 200")].measured == pytest.approx(5, rel=0.01)
    assert not verdicts[("http_req_duration{tenant:tenant-2}", "p(95) < 200")].passed
    assert verdicts[("http_req_failed{tenant:tenant-1}", "rate < 0.01")].measured == 0
    assert verdicts[("http_req_failed{tenant:tenant-2}", "rate < 0.01")].measured == 0.25
    assert verdicts[("http_reqs{tenant:tenant-1}", "rps > 19")].measured == 20
    assert verdicts[("http_req_duration{tenant:tenant-3}", "p(95) < 200")].note == "no samples"
    assert not verdicts[("http_req_duration", "p(95) < 200")].passed      # untagged: every tenant


def test_a_workers_tagged_buckets_merge_on_the_master() -> None:
    worker, master = traffic(Collector(), range(100, 102), "tenant-2", 7, per_second=3), Collector()
    master.merge(worker.drain())
    assert {key[2] for key in master.snapshot(0, 200).requests} == {"tenant-2"}
    assert [len(rows) for rows in master.per_second_by_tenant().values()] == [2]


def bursty(quiet_before_ms: float, quiet_during_ms: float) -> Collector:
    """Tenant 1 quiet, tenant 2 noisy: 10 s before the burst (1000-1010), 10 s of burst (1010-1020)."""
    collector = traffic(Collector(), range(1000, 1010), "tenant-1", quiet_before_ms)
    traffic(collector, range(1010, 1020), "tenant-1", quiet_during_ms)
    traffic(collector, range(1000, 1010), "tenant-2", 10)
    traffic(collector, range(1010, 1020), "tenant-2", 900, per_second=80)
    for second in range(1010, 1020):
        collector.count(second, refused_counter("tenant-2"), 30)
    return collector


def test_tenant_p95_ratio_compares_each_quiet_tenant_with_itself_before_the_burst() -> None:
    figures = RunFigures(bursty(10, 30), noisy=NoisyRun("tenant-2", (1010, 1020)))
    rows = {row["tenant"]: row for row in tenant_table(figures, 1000, 1020)}
    assert (rows["tenant-1"]["role"], rows["tenant-2"]["role"]) == ("quiet", "noisy")
    assert rows["tenant-1"]["p95_before_ms"] == pytest.approx(10, rel=0.01)
    assert rows["tenant-1"]["p95_burst_ms"] == pytest.approx(30, rel=0.01)
    assert rows["tenant-1"]["p95_ratio"] == pytest.approx(3, rel=0.02)
    assert rows["tenant-2"]["refused_429"] == 300 and rows["tenant-1"]["refused_429"] == 0
    verdicts = {v.key: v for v in evaluate(snapshot_between(figures, 1000, 1020), parse({"metrics": {
        "tenant_p95_ratio": ["value < 2"], "quiet_429": ["count == 0"], "noisy_429": ["count > 0"]}}))}
    # One figure: the KPI is the table's worst quiet ratio.
    assert verdicts["tenant_p95_ratio"].measured == rows["tenant-1"]["p95_ratio"]
    assert not verdicts["tenant_p95_ratio"].passed
    assert verdicts["quiet_429"].passed and verdicts["noisy_429"].measured == 300


def test_the_burst_the_noisy_tenant_reached_is_its_rate_during_over_before() -> None:
    figures = RunFigures(bursty(10, 11), noisy=NoisyRun("tenant-2", (1010, 1020)))
    rows = {row["tenant"]: row for row in tenant_table(figures, 1000, 1020)}
    noisy = rows["tenant-2"]
    assert (noisy["rps_before"], noisy["rps_burst"], noisy["peak_rps_burst"]) == (20, 80, 80)
    assert (rows["tenant-1"]["rps_before"], rows["tenant-1"]["rps_burst"]) == (20, 20)
    verdict = evaluate(snapshot_between(figures, 1000, 1020), parse({"metrics": {"burst_reached": ["value >= 3"]}}))[0]
    assert (verdict.measured, verdict.passed) == (4, True)
    assert "burst reached 4.0x its rate before" in tenants_text(noisy)


def test_a_burst_that_comes_in_waves_shows_its_busiest_second_and_a_short_burst_fails() -> None:
    """Burst users stalled by slow calls catch up all at once: the mean
    counts what was sent, the busiest second shows the wave; a burst that
    never reached its multiple is judged as such."""
    collector = traffic(Collector(), range(1000, 1010), "tenant-1", 10)
    traffic(collector, range(1010, 1020), "tenant-1", 10)
    traffic(collector, range(1000, 1010), "tenant-2", 10)
    traffic(collector, range(1010, 1019), "tenant-2", 10, per_second=40)
    traffic(collector, range(1019, 1020), "tenant-2", 10, per_second=200)
    figures = RunFigures(collector, noisy=NoisyRun("tenant-2", (1010, 1020)))
    row = {row["tenant"]: row for row in tenant_table(figures, 1000, 1020)}["tenant-2"]
    assert (row["rps_burst"], row["peak_rps_burst"]) == (56, 200)
    verdict = evaluate(snapshot_between(figures, 1000, 1020), parse({"metrics": {"burst_reached": ["value >= 3"]}}))[0]
    assert (verdict.measured, verdict.passed) == (2.8, False)


def test_a_noisy_tenant_with_no_requests_before_the_burst_has_no_burst_figure() -> None:
    collector = traffic(traffic(Collector(), range(1000, 1020), "tenant-1", 10), range(1010, 1020), "tenant-2", 10)
    snapshot = snapshot_between(RunFigures(collector, noisy=NoisyRun("tenant-2", (1010, 1020))), 1000, 1020)
    assert "burst_reached" not in snapshot.values
    verdict = evaluate(snapshot, parse({"metrics": {"burst_reached": ["value >= 3"]}}))[0]
    assert (verdict.passed, verdict.note) == (False, "no samples")


def test_a_quiet_tenant_that_holds_its_latency_passes() -> None:
    figures = RunFigures(bursty(10, 11), noisy=NoisyRun("tenant-2", (1010, 1020)))
    values = snapshot_between(figures, 1000, 1020).values
    assert values["tenant_p95_ratio"] == pytest.approx(1.1, rel=0.03)
    assert (values["quiet_429"], values["noisy_429"]) == (0, 300)


def test_a_quiet_tenants_429_counts_in_quiet_429_wherever_it_falls() -> None:
    collector = bursty(10, 10)
    collector.count(999, refused_counter("tenant-1"))      # during the warm-up: still counted
    values = snapshot_between(RunFigures(collector, noisy=NoisyRun("tenant-2", (1010, 1020))), 1000, 1020).values
    assert values["quiet_429"] == 1


def test_without_a_before_window_there_is_no_ratio_and_the_kpi_fails() -> None:
    figures = RunFigures(bursty(10, 30), noisy=NoisyRun("tenant-2", (1010, 1020)))
    snapshot = snapshot_between(figures, 1012, 1020)          # the warm-up ran into the burst
    assert "tenant_p95_ratio" not in snapshot.values
    verdict = evaluate(snapshot, parse({"metrics": {"tenant_p95_ratio": ["value < 2"]}}))[0]
    assert (verdict.passed, verdict.note) == (False, "no samples")


def test_other_profiles_have_tenant_rows_but_no_fairness_figures() -> None:
    figures = RunFigures(bursty(10, 30))
    assert "quiet_429" not in snapshot_between(figures, 1000, 1020).values
    rows = tenant_table(figures, 1000, 1020)
    assert [row["tenant"] for row in rows] == ["tenant-1", "tenant-2"]
    assert all(row["role"] == "" and "p95_ratio" not in row for row in rows)


def test_fairness_values_and_refusals_are_read_from_rows_and_counters() -> None:
    assert refusals({"http_429|tenant-1": 2, "lost_writes": 1, "http_429|": 3}) == {"tenant-1": 2, "": 3}
    rows = [{"role": "quiet", "refused_429": 0, "p95_ratio": 1.5}, {"role": "quiet", "refused_429": 1,
                                                                    "p95_ratio": 0.9},
            {"role": "noisy", "refused_429": 40, "p95_ratio": 9.0}]
    assert fairness_values(rows, NoisyRun("tenant-2")) == {"quiet_429": 1, "noisy_429": 40, "tenant_p95_ratio": 1.5}
    rows[2].update(rps_before=50.0, rps_burst=220.0)
    assert fairness_values(rows, NoisyRun("tenant-2"))["burst_reached"] == 4.4
    assert p95_ratio(None, 5) is None and p95_ratio(0, 5) is None and p95_ratio(4, 6) == 1.5


def test_rows_without_a_noisy_run_have_no_role() -> None:
    collector = traffic(Collector(), range(10, 12), "tenant-1", 4)
    snapshot = collector.snapshot(10, 12)
    (row,) = tenant_rows(snapshot, snapshot.counters)
    assert row["tenant"] == "tenant-1" and row["requests"] == 40 and row["role"] == ""


@pytest.mark.parametrize("elapsed, phase", [(0, BEFORE), (19.9, BEFORE), (20, BURST), (39.9, BURST), (40, AFTER)])
def test_the_burst_phase(elapsed: float, phase: str) -> None:
    assert burst_phase(elapsed, 20, 20) == phase


def test_the_burst_takes_the_noisy_tenant_to_its_multiple() -> None:
    weights = {"tenant-1": 6, "tenant-2": 2}                # alice 3 + bob 3, charlie 2
    assert burst_users(41, weights, "tenant-2", 4) == 31      # 41 x 2/8 = 10.25 users, 3 x that more
    assert burst_users(9, weights, "tenant-2", 4) == 7
    assert burst_users(9, weights, "tenant-1", 2) == 7        # tenant 1's 6.75 users, once more
    assert burst_users(9, weights, "tenant-2", 1) == 0


def test_noisy_settings_that_cannot_measure_fairness_are_refused() -> None:
    assert noisy_settings_error(20, 20, 4, 10, 60) is None
    assert "warm-up" in noisy_settings_error(10, 20, 4, 10, 60)
    assert "ends before" in noisy_settings_error(20, 20, 4, 10, 30)
    assert "above 1" in noisy_settings_error(20, 20, 1, 10, 60)
    assert noisy_settings_error(20, 20, 4, 10, None) is None          # no run time: nothing to check


def test_the_noisy_tenants_429_is_no_failure_and_others_pass_through() -> None:
    fired = []
    event = ExpectedRefusals(SimpleNamespace(fire=lambda **meta: fired.append(meta)))
    error = RuntimeError("429")
    event.fire(response=SimpleNamespace(status_code=429), exception=error)
    event.fire(response=SimpleNamespace(status_code=500), exception=error)
    assert [meta["exception"] for meta in fired] == [None, error]


def test_a_429_is_a_failure_but_never_a_violation() -> None:
    failures = []
    response = SimpleNamespace(status_code=429, failure=failures.append)
    assert over_budget(response, "read back") and "429" in failures[0]
    assert not over_budget(SimpleNamespace(status_code=200, failure=failures.append), "read back")


def test_a_429_is_counted_for_its_tenant() -> None:
    from kpi import hooks

    before = refusals(hooks.collector.snapshot(0, 2**31).counters).get("tenant-9", 0)
    hooks.record_request("GET", "/x", 3.0, False, None, "tenant-9", 429)
    hooks.record_request("GET", "/x", 3.0, False, None, "tenant-9", 200)
    assert refusals(hooks.collector.snapshot(0, 2**31).counters)["tenant-9"] == before + 1


def test_the_kpi_tab_shows_a_row_per_tenant() -> None:
    figures = RunFigures(bursty(10, 30), noisy=NoisyRun("tenant-2", (1010, 1020)))
    thresholds = parse({"metrics": {"quiet_429": ["count == 0"]}}, "t.yaml")
    rows = tab_rows([], thresholds, RunState(), tenant_rows=tenant_table(figures, 1000, 1020))
    tenant_tab = [row for row in rows if row["kpi"].startswith("(tenant")]
    assert [row["kpi"] for row in tenant_tab] == ["(tenant tenant-1)", "(tenant tenant-2)"]
    assert tenant_tab[0]["threshold"] == "quiet tenant" and "ratio 2.97" in tenant_tab[0]["measured"]
