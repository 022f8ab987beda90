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


def test_reset_stats_restarts_the_judged_window_and_forgets_stress_steps() -> None:
    run = RunState()
    run.begin_run(now=100.0)
    run.steps.append({"held": True})
    run.capacity_rps, run.capacity_window = 50.0, [1, 2]
    run.reset_stats(now=130.0)
    assert (run.started_at, run.steps, run.capacity_rps, run.capacity_window) == (130.0, [], None, None)
