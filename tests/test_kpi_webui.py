"""The web UI's pure parts: the state the page is told and the tab's rows."""
from __future__ import annotations

from kpi.evaluate import Verdict
from kpi.state import RunState
from kpi.thresholds import parse
from kpi.webui import reported_state, tab_rows


def test_a_run_held_in_ready_by_the_preflight_is_reported_as_spawning() -> None:
    assert reported_state("ready", shape_running=True) == "spawning"
    assert reported_state("ready", shape_running=False) == "ready"      # no run: the start form
    assert reported_state("running", shape_running=True) == "running"
    assert reported_state("stopped", shape_running=False) == "stopped"


def test_tab_rows_show_results_the_preflight_and_the_thresholds_file() -> None:
    thresholds = parse({"warmup_s": 5, "metrics": {"http_reqs": ["rps > 1"]}}, "t.yaml")
    run = RunState(preflight_running=True)
    rows = tab_rows([Verdict("http_reqs", "rps > 1", 2.5, True), Verdict("http_reqs", "count > 9", None, False,
                                                                         "no samples")], thresholds, run)
    assert rows[0]["kpi"] == "(pre-flight)" and "running" in rows[0]["measured"]
    assert [(r["measured"], r["result"]) for r in rows[1:3]] == [("2.5", "PASS"), ("no samples", "FAIL")]
    assert rows[-1]["threshold"] == "t.yaml" and "Reset stats" in rows[-1]["measured"]
    run.preflight_running = False
    assert [r["kpi"] for r in tab_rows([], thresholds, run)] == ["(thresholds file)"]


def test_an_undecided_kpi_shows_its_interval_and_the_word_the_tab_colours() -> None:
    """kpi/uncertainty.py: the tab says UNDECIDED (coloured like INCONCLUSIVE
    by the injected script, which colours every word of RESULTS), and the
    interval stands with the figure; a decided failure stays FAIL."""
    from kpi.webui import RESULTS, TEMPLATES

    thresholds = parse({"metrics": {"tenant_p95_ratio": ["value < 2"]}}, "t.yaml")
    undecided = Verdict("tenant_p95_ratio", "value < 2", 2.165, False,
                        "95 % interval 1.776-2.692: the bound is inside it, undecided", (1.776, 2.692), True)
    failed = Verdict("tenant_p95_ratio", "value < 2", 2.8, False, "95 % interval 2.3-3.4", (2.3, 3.4))
    rows = tab_rows([undecided, failed], thresholds, RunState())
    assert [(r["result"], r["measured"]) for r in rows[:2]] == [
        ("UNDECIDED", "2.165 (95 % interval 1.776-2.692: the bound is inside it, undecided)"),
        ("FAIL", "2.8 (95 % interval 2.3-3.4)")]
    script = TEMPLATES.get_template("locust_ui_extra.html").render(results=list(RESULTS), profile_note="")
    assert "UNDECIDED" in RESULTS and "td.apprun-UNDECIDED" in script
    page = TEMPLATES.get_template("kpi.html").render(verdicts=[undecided], source="t.yaml", thresholds_text="")
    assert '<td class="UNDECIDED">UNDECIDED</td>' in page and "1.776-2.692" in page


def test_reset_stats_restarts_the_judged_window_and_forgets_stress_steps() -> None:
    run = RunState()
    run.begin_run(now=100.0)
    run.steps.append({"held": True})
    run.capacity_rps, run.capacity_window = 50.0, [1, 2]
    run.reset_stats(now=130.0)
    assert (run.started_at, run.steps, run.capacity_rps, run.capacity_window) == (130.0, [], None, None)


def test_a_stress_run_shows_its_capacity_and_an_unreached_rate_as_the_exit_code_will(monkeypatch) -> None:
    """The KPIs tab and the exit code judge a stress run alike
    (kpi/live.py judged_verdicts): a rate its steps have not reached is
    UNDECIDED, not a red FAIL, and the tab says what the capacity is."""
    from kpi import live

    held = {"offered_rps": 390.0, "measured_rps": 390.0, "held": True, "broken": [], "invalid": "",
            "latency_held": True, "window": [100, 112]}
    run = RunState(profile="stress", steps=[held], capacity_rps=390.0, started_at=10.0, load_began_at=12.0,
                   load_stopped_at=162.0)
    monkeypatch.setattr(live, "run", run)
    verdicts = live.judged_verdicts([Verdict("http_reqs", "rps > 500", 390.0, False),
                                     Verdict("http_req_duration", "p(95) < 200", 900.0, False)])
    rows = tab_rows(verdicts, parse({"metrics": {"http_reqs": ["rps > 500"]}}, "t.yaml"), run)
    assert [(r["kpi"], r["result"]) for r in rows[:3]] == [
        ("http_reqs", "UNDECIDED"), ("http_req_duration", "FAIL"), ("(stress capacity)", "")]
    assert "150 s of load" in rows[0]["measured"] and rows[2]["measured"].startswith("at least 390 req/s")
    run.profile = "kpi"                          # any other profile: as evaluated
    assert [v.result for v in live.judged_verdicts([Verdict("http_reqs", "rps > 500", 390.0, False)])] == ["FAIL"]
