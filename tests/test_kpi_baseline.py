"""Comparison with a baseline run and the regression: limits (kpi/baseline.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kpi.baseline import BaselineError, compare, load, regressions
from kpi.evaluate import Verdict
from kpi.state import RunState
from kpi.thresholds import ThresholdsError, parse

METRICS = {"http_req_duration": ["p(95) < 200", "avg < 100"], "http_reqs": ["rps > 500"],
           "lost_writes": ["count == 0"]}


def thresholds(regression: dict | None = None):  # type: ignore[no-untyped-def]
    return parse({"metrics": METRICS, **({"regression": regression} if regression else {})})


def test_changes_and_regressions_follow_each_kpis_direction() -> None:
    rules = thresholds({"http_req_duration p(95)": "20%", "http_reqs rps": 10}).regression
    before = {("http_req_duration", "p(95) < 200"): 50.0, ("http_req_duration", "avg < 100"): 20.0,
              ("http_reqs", "rps > 500"): 600.0, ("lost_writes", "count == 0"): 0.0}
    now = [Verdict("http_req_duration", "p(95) < 200", 65.0, True),
           Verdict("http_req_duration", "avg < 100", 40.0, True),
           Verdict("http_reqs", "rps > 500", 520.0, True), Verdict("lost_writes", "count == 0", 0.0, True)]
    deltas = {(d.metric, d.threshold): d for d in compare(now, before, rules)}
    p95, avg = deltas[("http_req_duration", "p(95) < 200")], deltas[("http_req_duration", "avg < 100")]
    rps, lost = deltas[("http_reqs", "rps > 500")], deltas[("lost_writes", "count == 0")]
    assert (p95.change_percent, p95.worse_percent, p95.regressed) == (30.0, 30.0, True)     # higher is worse
    assert (avg.change_percent, avg.limit_percent, avg.regressed) == (100.0, None, False)  # no rule: shown only
    assert (rps.change_percent, rps.worse_percent, rps.regressed) == (-13.333, 13.333, True)  # lower is worse
    assert (lost.change_percent, lost.worse_percent, lost.regressed) == (0.0, None, False)
    assert [d.metric for d in regressions(list(deltas.values()))] == ["http_req_duration", "http_reqs"]


def test_within_the_limit_or_better_is_no_regression() -> None:
    rules = thresholds({"http_req_duration p(95)": "20%"}).regression
    before = {("http_req_duration", "p(95) < 200"): 50.0}
    for measured in (59.0, 30.0):
        [delta] = compare([Verdict("http_req_duration", "p(95) < 200", measured, True)], before, rules)
        assert not delta.regressed


def test_a_regression_fails_the_run_although_every_kpi_held() -> None:
    rules = thresholds({"http_req_duration p(95)": "20%"}).regression
    run = RunState(verdicts=[Verdict("http_req_duration", "p(95) < 200", 65.0, True)])
    run.deltas = compare(run.verdicts, {("http_req_duration", "p(95) < 200"): 50.0}, rules)
    assert run.verdict == "FAIL"


def test_a_kpi_missing_from_the_baseline_is_shown_not_judged() -> None:
    rules = thresholds({"http_req_duration p(95)": "20%"}).regression
    [delta] = compare([Verdict("http_req_duration", "p(95) < 200", 65.0, True)], {}, rules)
    assert delta.change_percent is None and not delta.regressed and delta.describe() == "no baseline figure"


@pytest.mark.parametrize("regression, message", [
    ({"http_req_durationp(95)": "20%"}, "cannot parse"), ({"sut_cpu_percent avg": "5%"}, "not a KPI"),
    ({"http_req_duration p(95)": "fast"}, "not a percentage"), (["x"], "must map"),
])
def test_bad_regression_sections_are_thresholds_errors(regression, message) -> None:
    with pytest.raises(ThresholdsError, match=message):
        parse({"metrics": METRICS, "regression": regression})


def test_a_baseline_is_a_summary_json(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"kpis": [{"metric": "http_reqs", "threshold": "rps > 500", "measured": 510.5,
                                          "passed": True}]}))
    assert load(path) == {("http_reqs", "rps > 500"): 510.5}
    with pytest.raises(BaselineError, match="does not exist"):
        load(tmp_path / "missing.json")
    path.write_text("{}")
    with pytest.raises(BaselineError, match="not a summary.json"):
        load(path)
