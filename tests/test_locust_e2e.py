"""The main job end to end: real `locust --headless` processes against real
stacks, judged by the KPI gate.  Short and bounded (tens of seconds each)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from tests.conftest import SEED_PASSWORD, free_port

ROOT = Path(__file__).resolve().parent.parent
LOCUST_TIMEOUT_S = 240
CHARTS = {"latency_over_time.png", "latency_distribution.png", "rps_over_time.png", "resources_over_time.png"}

pytestmark = pytest.mark.slow


def run_locust(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """locust from the repository root, so locust.conf supplies the defaults.
    It runs in a session of its own so that, should it hang, the whole group
    it started (forked --processes workers included) is killed, nothing else."""
    argv = [sys.executable, "-m", "locust", *args]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            env={**os.environ, "APPRUN_SEED_PASSWORD": SEED_PASSWORD, **(env or {})})
    try:
        stdout, stderr = proc.communicate(timeout=LOCUST_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"locust did not stop within {LOCUST_TIMEOUT_S} s:\n{(stdout + stderr)[-4000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def report_folder(report_dir: Path) -> Path:
    """The run's report folder: ``<report-dir>/latest`` points at it."""
    latest = report_dir / "latest"
    assert latest.is_symlink(), f"no report in {report_dir}"
    return latest.resolve()


def summary_of(report_dir: Path) -> dict:
    return json.loads((report_folder(report_dir) / "summary.json").read_text())


def kpis(summary: dict) -> dict[str, tuple[str, float | None, bool]]:
    """summary.json's KPIs: key -> (threshold, measured, passed)."""
    return {k["metric"]: (k["threshold"], k["measured"], k["passed"]) for k in summary["kpis"]}


# The machine is shared: the e2e tests judge the mechanism under budgets they
# control, so a busy neighbour cannot turn their run INCONCLUSIVE.  The
# saturated-machine test below uses the shipped defaults.
VALIDITY_OFF = {"generator_cpu_percent": None, "generator_loop_lag_ms": None, "machine_cpu_percent": None}


def write_thresholds(path: Path, metrics: dict[str, list[str]], warmup_s: int = 3,
                     validity: dict[str, float | None] | None = None) -> Path:
    lines = [f"warmup_s: {warmup_s}", "metrics:"]
    lines += [f"  {json.dumps(metric)}: {json.dumps(expressions)}" for metric, expressions in metrics.items()]
    budgets = VALIDITY_OFF if validity is None else validity
    if budgets:
        lines += ["validity:"] + [f"  {name}: {json.dumps(value)}" for name, value in budgets.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# Every metric the shipped thresholds.yaml judges, under bounds that no
# machine can miss: this test checks the mechanism (embedded stack, every
# KPI judged, exit code, report), not the speed of the day.  Whether the
# shipped KPIs hold is measured by `./dev run` and `bench/`, not asserted here.
LENIENT_SHIPPED_KPIS = {
    "http_req_duration": ["p(95) < 60000"], "http_req_latency": ["p(95) < 60000"], "http_reqs": ["rps > 20"],
    "http_req_failed": ["rate < 0.5"], "sut_memory_mb": ["max < 100000"], "sut_cpu_percent": ["avg < 101"],
    "isolation_violations": ["count == 0"], "rbac_violations": ["count == 0"], "lost_writes": ["count == 0"],
    "workflow_failures": ["count == 0"], "auth_checks_per_s": ["value > 1"], "wasm_cold_start_ms": ["max < 60000"],
    "wasm_hot_us": ["med < 10000000"], "http_req_duration{name:/data/products [list]}": ["p(95) < 60000"],
}


def shipped_metrics() -> set[str]:
    import yaml
    return set(yaml.safe_load((ROOT / "thresholds.yaml").read_text())["metrics"])


def summary_agrees_with_exit_code(summary: dict, returncode: int) -> None:
    """The exit code, the verdict, the validity checks and the per-KPI
    results are one fact."""
    failed = [k for k in summary["kpis"] if not k["passed"] and not k["undecided"]]
    undecided = [k for k in summary["kpis"] if k["undecided"]]
    invalid = [c for c in summary["validity"] if not c["ok"]]
    expected = "INCONCLUSIVE" if invalid else "FAIL" if failed else "INCONCLUSIVE" if undecided else "PASS"
    assert summary["verdict"] == expected, (summary["kpis"], summary["validity"])
    assert returncode == {"PASS": 0, "FAIL": 3, "INCONCLUSIVE": 4}[expected], (returncode, failed, invalid)


def test_main_job_on_its_own_embedded_stack_judges_every_shipped_kpi(tmp_path: Path) -> None:
    """No --host: the suite starts its own stack, judges every metric the
    shipped thresholds name, writes the report and stops only what it started."""
    assert shipped_metrics() == set(LENIENT_SHIPPED_KPIS), "keep this test's metrics in step with thresholds.yaml"
    thresholds = write_thresholds(tmp_path / "lenient.yaml", LENIENT_SHIPPED_KPIS, warmup_s=5)
    env = {"APPRUN_STATE_DIR": str(tmp_path / "state"), "APPRUN_PG_PORT": str(free_port()),
           "APPRUN_GATEWAY_PORT": str(free_port()), "APPRUN_TEMPORAL_PORT": str(free_port()),
           "APPRUN_TEMPORAL_UI_PORT": str(free_port())}
    result = run_locust(["--headless", "--run-time", "30s", "--thresholds", str(thresholds),
                         "--report-dir", str(tmp_path / "reports")], env)
    folder = report_folder(tmp_path / "reports")
    summary = summary_of(tmp_path / "reports")
    summary_agrees_with_exit_code(summary, result.returncode)
    assert result.returncode == 0, [k for k in summary["kpis"] if not k["passed"]]
    # The generator measured itself and the machine over the judged window.
    assert {c["budget_name"] for c in summary["validity"] if c["measured"] is not None} == {
        "generator_cpu_percent", "generator_loop_lag_ms", "machine_cpu_percent"}
    assert {kpi["metric"] for kpi in summary["kpis"]} == set(LENIENT_SHIPPED_KPIS)
    assert folder.parent == tmp_path / "reports"
    assert (tmp_path / "reports" / "latest").resolve() == folder.resolve()
    assert summary["embedded_stack"] is True
    assert set(summary["resources"]) == {"postgres", "temporal", "worker", "gateway", "total"}
    # Both readings of the stack's CPU: % of the machine and cores (docker stats' 1.0 = one core).
    total = summary["resources"]["total"]
    assert abs(total["cpu_avg_cores"] * 100 / summary["environment"]["cpus"] - total["cpu_avg_percent"]) < 0.2
    assert CHARTS <= {p.name for p in folder.glob("*.png")}
    assert all((folder / chart).stat().st_size > 1000 for chart in CHARTS)
    markdown = (folder / "summary.md").read_text()
    for kpi in summary["kpis"]:     # the report's table shows the JSON's figures
        assert f"| {kpi['metric']} |" in markdown, kpi["metric"]
    assert (folder / "locust.html").stat().st_size > 0
    assert "/data/products [list]" in (folder / "locust_stats.csv").read_text()
    assert (folder / "locust_failures.csv").exists() and (folder / "locust_exceptions.csv").exists()
    # The suite stopped every process it started.
    state = json.loads((tmp_path / "state" / "stack.json").read_text())
    assert not [pid for pid in state.get("pids", {}).values() if psutil.pid_exists(pid)], state


def test_an_impossible_threshold_fails_the_run_and_is_named(tmp_path: Path, gateway_url: str) -> None:
    thresholds = write_thresholds(tmp_path / "impossible.yaml", {
        "http_req_duration": ["p(95) < 0.001"], "http_req_failed": ["rate < 0.5"]})
    result = run_locust(["--headless", "--host", gateway_url, "--run-time", "8s", "--skip-preflight",
                         "--thresholds", str(thresholds), "--load-profile", "plain", "--users", "5",
                         "--spawn-rate", "5", "--report-dir", str(tmp_path / "reports")])
    assert result.returncode == 3, (result.stdout + result.stderr)[-4000:]
    summary = summary_of(tmp_path / "reports")
    summary_agrees_with_exit_code(summary, result.returncode)
    rows = kpis(summary)
    assert rows["http_req_duration"][0] == "p(95) < 0.001" and rows["http_req_duration"][2] is False
    assert rows["http_req_failed"][2] is True


def test_distributed_run_judges_the_combined_statistics_on_the_master(tmp_path: Path, gateway_url: str) -> None:
    thresholds = write_thresholds(tmp_path / "loose.yaml", {
        "http_req_duration": ["p(95) < 10000"], "http_reqs": ["count > 50"], "http_req_failed": ["rate < 0.05"],
        "isolation_violations": ["count == 0"], "rbac_violations": ["count == 0"], "lost_writes": ["count == 0"],
        "auth_checks_per_s": ["value > 100"], "wasm_hot_us": ["med < 100000"]})
    port = str(free_port())  # the master binds it, the forked workers connect to it
    result = run_locust(["--headless", "--host", gateway_url, "--processes", "2", "--master-bind-port", port,
                         "--master-port", port, "--run-time", "12s", "--thresholds", str(thresholds),
                         "--load-profile", "plain", "--users", "10", "--spawn-rate", "10",
                         "--report-dir", str(tmp_path / "reports")])
    console = result.stdout + result.stderr
    assert result.returncode == 0, console[-4000:]
    assert console.count("apprun KPI gate") == 1        # one verdict, on the master
    summary = summary_of(tmp_path / "reports")
    summary_agrees_with_exit_code(summary, result.returncode)
    assert set(kpis(summary)) == {"http_req_duration", "http_reqs", "http_req_failed", "isolation_violations",
                                  "rbac_violations", "lost_writes", "auth_checks_per_s", "wasm_hot_us"}
    # a --host target: the pre-flight goes over HTTP
    assert summary["preflight"]["auth_method"] == "HTTP /auth/me over 16 connections"
    # Both workers measured themselves; the master ships only the machine's CPU and its own.
    workers = {c["where"] for c in summary["validity"] if c["where"].startswith("worker")}
    assert len(workers) == 2, summary["validity"]
    judged = next(k for k in summary["kpis"] if k["metric"] == "http_reqs")["measured"]
    # Requests from both workers reach the master's collector: the judged
    # count (after the warm-up) is a large share of Locust's own total.
    assert 0.5 * summary["totals"]["requests"] <= judged <= summary["totals"]["requests"]


@pytest.mark.parametrize("content, message", [
    ("metrics:\n  http_req_durration: ['p(95) < 200']\n", "http_req_durration"),
    ("metrics:\n  http_req_duration: ['p(95) << 200']\n", "p(95) << 200"),
    ("metrics: [", "thresholds"),
])
def test_an_invalid_thresholds_file_exits_2_before_any_load(tmp_path: Path, gateway_url: str, content: str,
                                                             message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    result = run_locust(["--headless", "--host", gateway_url, "--run-time", "5s", "--thresholds", str(path),
                         "--report-dir", str(tmp_path / "reports")])
    console = result.stdout + result.stderr
    assert result.returncode == 2, console[-3000:]
    assert "invalid thresholds" in console and message in console
    assert "Traceback" not in console
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir())


def test_a_target_off_this_machine_is_refused_before_any_load(tmp_path: Path) -> None:
    result = run_locust(["--headless", "--host", "http://10.1.2.3:8080", "--run-time", "5s",
                         "--report-dir", str(tmp_path / "reports")])
    console = result.stdout + result.stderr
    assert result.returncode == 2, console[-3000:]
    assert "refusing the target" in console and "10.1.2.3" in console and "loopback" in console
    assert "Traceback" not in console


def test_web_ui_has_a_live_kpi_tab(tmp_path: Path, gateway_url: str) -> None:
    """The KPIs tab is declared in the UI's template and fed by /stats/requests;
    /kpi.json serves the same verdicts with the thresholds file."""
    thresholds = write_thresholds(tmp_path / "thresholds.yaml", LENIENT_SHIPPED_KPIS)
    web_port = free_port()
    argv = [sys.executable, "-m", "locust", "--host", gateway_url, "--web-host", "127.0.0.1", "--web-port",
            str(web_port), "--thresholds", str(thresholds), "--autostart", "--autoquit", "2", "--run-time", "12s",
            "--skip-preflight",
            "--load-profile", "plain", "--users", "4", "--spawn-rate", "4", "--report-dir", str(tmp_path / "reports")]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "APPRUN_SEED_PASSWORD": SEED_PASSWORD})
    base = f"http://127.0.0.1:{web_port}"
    try:
        rows: list = []
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not rows:
            time.sleep(1)
            try:
                stats = requests.get(f"{base}/stats/requests", timeout=5).json()
            except requests.RequestException:
                continue
            rows = next((t["data"] for t in stats.get("extended_stats", []) if t["key"] == "apprun-kpis"), [])
        assert {row["kpi"] for row in rows} >= {"http_req_duration", "sut_cpu_percent", "isolation_violations"}
        verdict_rows = [row for row in rows if not row["kpi"].startswith("(")]   # not the notes
        assert all(row["result"] in ("PASS", "FAIL") for row in verdict_rows)
        assert any(row["kpi"] == "(thresholds file)" and row["threshold"].endswith("thresholds.yaml") for row in rows)
        assert '"extended_tabs": [{"key": "apprun-kpis", "title": "KPIs"}]' in requests.get(base, timeout=5).text
        live = requests.get(f"{base}/kpi.json", timeout=5).json()
        assert "metrics:" in live["thresholds"] and len(live["verdicts"]) == len(verdict_rows)
        assert proc.wait(timeout=60) in (0, 3)      # --autoquit ends it after the run
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_abort_on_fail_stops_the_run_early(tmp_path: Path, gateway_url: str) -> None:
    thresholds = tmp_path / "abort.yaml"
    thresholds.write_text("warmup_s: 2\nabort_on_fail: {enabled: true, delay_s: 2}\n"
                          "metrics:\n  http_req_duration: ['max < 0.001']\n"
                          "validity: {generator_cpu_percent: null, generator_loop_lag_ms: null, "
                          "machine_cpu_percent: null}\n")
    started = time.monotonic()
    result = run_locust(["--headless", "--host", gateway_url, "--run-time", "60s", "--skip-preflight",
                         "--thresholds", str(thresholds), "--load-profile", "plain", "--users", "3",
                         "--spawn-rate", "3", "--report-dir", str(tmp_path / "reports")])
    assert result.returncode == 3, (result.stdout + result.stderr)[-3000:]
    assert time.monotonic() - started < 45, "the run was not aborted"
    summary = summary_of(tmp_path / "reports")
    assert summary["aborted"] == "http_req_duration max < 0.001"


def test_an_embedded_stack_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        env = {"APPRUN_STATE_DIR": str(tmp_path / "state"), "APPRUN_PG_PORT": str(free_port()),
               "APPRUN_GATEWAY_PORT": str(busy.getsockname()[1]), "APPRUN_TEMPORAL_PORT": str(free_port()),
               "APPRUN_TEMPORAL_UI_PORT": str(free_port())}
        result = run_locust(["--headless", "--run-time", "5s", "--report-dir", str(tmp_path / "reports")], env)
    console = result.stdout + result.stderr
    assert result.returncode == 2, console[-3000:]
    assert "the embedded stack did not start" in console and "APPRUN_GATEWAY_PORT" in console
    assert "Traceback" not in console


def test_stress_profile_reports_the_capacity_and_judges_that_step(tmp_path: Path, gateway_url: str) -> None:
    """Steps of 15 s from half the RPS target up by 25 %: with a target of
    40 req/s the two steps offer 20 and 25 req/s; both hold, so the capacity
    is the second one's rate, which is below the target.  No step broke a
    KPI: the run stopped (--run-time 30s) before it found the stack's limit,
    so the missed rate is UNDECIDED and the run INCONCLUSIVE (exit 4), not
    FAIL; the capacity is a lower bound (README "The load test")."""
    thresholds = write_thresholds(tmp_path / "stress.yaml", {
        "http_req_duration": ["p(95) < 2000"], "http_reqs": ["rps > 40"], "http_req_failed": ["rate < 0.05"]})
    # 30 s: the second step ends as the run does, and is judged all the same.
    result = run_locust(["--headless", "--host", gateway_url, "--load-profile", "stress", "--run-time", "30s",
                         "--skip-preflight", "--thresholds", str(thresholds),
                         "--report-dir", str(tmp_path / "reports")])
    assert result.returncode == 4, (result.stdout + result.stderr)[-3000:]
    summary = summary_of(tmp_path / "reports")
    summary_agrees_with_exit_code(summary, result.returncode)
    steps = summary["stress_steps"]
    assert [step["offered_rps"] for step in steps] == [20.0, 25.0] and all(step["held"] for step in steps)
    assert all(step["invalid"] == "" for step in steps)
    assert summary["capacity_rps"] == steps[1]["measured_rps"] and 20 <= summary["capacity_rps"] <= 30
    assert summary["capacity_lower_bound"] is True and summary["run_time_s"] == 30
    # The final table judges the capacity step: one figure, one rounding.
    assert kpis(summary)["http_reqs"] == ("rps > 40", summary["capacity_rps"], False)
    rate = next(k for k in summary["kpis"] if k["metric"] == "http_reqs")
    assert rate["undecided"] and "no stress step above the capacity broke a KPI" in rate["note"]
    assert summary["verdict"] == "INCONCLUSIVE" and summary["inconclusive_cause"].startswith("http_reqs ")
    text = (report_folder(tmp_path / "reports") / "summary.md").read_text()
    assert "| stress step" in text and "Capacity (stress profile): at least " in text
    assert "capacity (stress): at least " in result.stdout


def test_a_saturated_machine_makes_the_run_inconclusive(tmp_path: Path, gateway_url: str) -> None:
    """Two busy loops hog both cores: the generator's measurement is not
    trustworthy, so the run ends INCONCLUSIVE (exit 4) although every KPI,
    judged under bounds no machine can miss, holds."""
    thresholds = write_thresholds(tmp_path / "hogged.yaml", {
        "http_req_duration": ["p(95) < 60000"], "http_req_failed": ["rate < 0.5"]},
        validity={})                                     # the shipped default budgets
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        result = run_locust(["--headless", "--host", gateway_url, "--run-time", "12s", "--skip-preflight",
                             "--thresholds", str(thresholds), "--load-profile", "plain", "--users", "5",
                             "--spawn-rate", "5", "--report-dir", str(tmp_path / "reports")])
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    summary = summary_of(tmp_path / "reports")
    assert all(k["passed"] for k in summary["kpis"]), summary["kpis"]
    assert result.returncode == 4, (result.stdout + result.stderr)[-3000:]
    summary_agrees_with_exit_code(summary, result.returncode)
    breached = [c for c in summary["validity"] if not c["ok"]]
    assert breached and summary["inconclusive_cause"].startswith(breached[0]["budget_name"])
    machine = next(c for c in summary["validity"] if c["budget_name"] == "machine_cpu_percent")
    assert machine["measured"] >= 97 and not machine["ok"]
    assert "INCONCLUSIVE" in (report_folder(tmp_path / "reports") / "summary.md").read_text()


def _signal_tree(pid: int, signum: int) -> None:
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            proc.send_signal(signum)
        except psutil.NoSuchProcess:
            continue


def test_a_gateway_stall_shows_in_the_latency_from_the_intended_send_time(tmp_path: Path, running_stack) -> None:
    """The gateway's processes are paused for 3 s (SIGSTOP, SIGCONT) in the
    middle of a 45 s kpi run.  The users keep their schedule, so the sends
    due during the stall are measured from when they were due: the latency's
    p(99) shows seconds, while the service time, which a closed loop would
    report, barely moves."""
    import threading

    gateway_pid = running_stack[1].processes["gateway"].pid
    thresholds = write_thresholds(tmp_path / "stall.yaml", {
        "http_reqs": ["rps > 30"], "http_req_duration": ["p(99) < 60000"], "http_req_latency": ["p(99) < 60000"],
        "dropped_iterations": ["count < 1000000"]}, warmup_s=5)

    def stall() -> None:
        _signal_tree(gateway_pid, signal.SIGSTOP)
        try:
            time.sleep(3)
        finally:
            _signal_tree(gateway_pid, signal.SIGCONT)

    timer = threading.Timer(22, stall)
    timer.start()
    try:
        result = run_locust(["--headless", "--host", running_stack[1].gateway_url, "--run-time", "45s",
                             "--skip-preflight", "--thresholds", str(thresholds), "--load-profile", "kpi",
                             "--report-dir", str(tmp_path / "reports")])
    finally:
        timer.cancel()
        timer.join()
        _signal_tree(gateway_pid, signal.SIGCONT)
    summary = summary_of(tmp_path / "reports")
    summary_agrees_with_exit_code(summary, result.returncode)
    latency, duration = kpis(summary)["http_req_latency"][1], kpis(summary)["http_req_duration"][1]
    assert latency >= 2000, (latency, duration)
    assert duration < latency / 2, (latency, duration)          # the service time hides the stall
    assert summary["latency"]["http_req_latency"]["p99"] == latency
    assert summary["dropped_iterations"] >= 0
    assert (report_folder(tmp_path / "reports") / "latency_over_time.png").stat().st_size > 1000


def test_a_regression_against_the_baseline_fails_the_run(tmp_path: Path, gateway_url: str) -> None:
    """Every KPI holds its absolute threshold, but p(95) is far worse than
    the baseline's: the regression: limit fails the run (exit 3)."""
    thresholds = write_thresholds(tmp_path / "drift.yaml", {
        "http_req_duration": ["p(95) < 60000"], "http_req_failed": ["rate < 0.5"]})
    with thresholds.open("a") as handle:
        handle.write('regression:\n  "http_req_duration p(95)": 20%\n')
    baseline = tmp_path / "baseline-summary.json"        # an earlier run's summary.json, 1 microsecond fast
    baseline.write_text(json.dumps({"kpis": [
        {"metric": "http_req_duration", "threshold": "p(95) < 60000", "measured": 0.001, "passed": True},
        {"metric": "http_req_failed", "threshold": "rate < 0.5", "measured": 0.0, "passed": True}]}))
    result = run_locust(["--headless", "--host", gateway_url, "--run-time", "8s", "--skip-preflight",
                         "--thresholds", str(thresholds), "--baseline", str(baseline), "--load-profile", "plain",
                         "--users", "5", "--spawn-rate", "5", "--report-dir", str(tmp_path / "reports")])
    assert result.returncode == 3, (result.stdout + result.stderr)[-3000:]
    summary = summary_of(tmp_path / "reports")
    assert summary["verdict"] == "FAIL" and all(k["passed"] for k in summary["kpis"])
    deltas = {d["metric"]: d for d in summary["baseline"]["deltas"]}
    assert deltas["http_req_duration"]["regressed"] and deltas["http_req_duration"]["limit_percent"] == 20
    assert not deltas["http_req_failed"]["regressed"] and deltas["http_req_failed"]["limit_percent"] is None
    assert "**REGRESSION**" in (report_folder(tmp_path / "reports") / "summary.md").read_text()


def test_a_baseline_that_is_not_a_summary_exits_2_before_any_load(tmp_path: Path, gateway_url: str) -> None:
    (tmp_path / "not-a-summary.json").write_text('{"verdict": "PASS"}')
    for baseline, message in ((tmp_path / "missing.json", "does not exist"),
                              (tmp_path / "not-a-summary.json", "is not a summary.json")):
        result = run_locust(["--headless", "--host", gateway_url, "--run-time", "5s", "--baseline", str(baseline),
                             "--report-dir", str(tmp_path / "reports")])
        console = result.stdout + result.stderr
        assert result.returncode == 2, console[-3000:]
        assert "invalid baseline" in console and message in console and "Traceback" not in console


# --- the noisy profile (issue 13) -------------------------------------------
# Both runs judge the same file.  What decides them:
# * quiet_429 == 0: no budget may refuse the quiet tenant for charlie's burst;
# * noisy_429 > 0: charlie's burst must be held to his plan's budget.  His
#   burst users keep several spinning calls (each ~2 s, to its time or fuel
#   limit) in flight while his plan admits one at a time and lets a call wait
#   at most APPRUN_FUNCTION_QUEUE_WAIT_MS (250 ms) for it: with budgets on he
#   is refused within the burst's first seconds, on any machine.  With budgets
#   off nothing in the gateway answers 429 to a logged-in tenant at all (the
#   login throttle answers only after failed logins; the personas' logins
#   succeed), so the count is 0 and the run fails (exit 3) whatever the
#   machine's speed.  That is the deterministic reason this test asserts.
# * tenant_p95_ratio < 10: generous on purpose (the machine's speed moves the
#   figures): with budgets on it measured 0.6 and 2.8 here; with budgets off the
#   quiet tenant's p95 rose 140-270x (its invokes queued behind the spins on the
#   shared pool, before small calls ran inline on the hub), which also failed,
#   but is not what the test relies on.
# * burst_reached > 1: the burst happened (charlie sent more per second
#   during it than before it); the shipped file asks >= 3 of its 4x.
NOISY_KPIS = {
    "http_reqs": ["rps > 40"], "quiet_429": ["count == 0"], "noisy_429": ["count > 0"], "burst_reached": ["value > 1"],
    "tenant_p95_ratio": ["value < 10"], "http_req_failed{tenant:tenant-1}": ["rate < 0.05"],
    "http_req_failed": ["rate < 0.05"], "isolation_violations": ["count == 0"],
}
BUDGETS_OFF = {"APPRUN_BUDGETS_ENABLED": "false"}   # every budget, the WASM ones included


def embedded_stack_env(state_dir: Path) -> dict[str, str]:
    return {"APPRUN_STATE_DIR": str(state_dir), "APPRUN_PG_PORT": str(free_port()),
            "APPRUN_GATEWAY_PORT": str(free_port()), "APPRUN_TEMPORAL_PORT": str(free_port()),
            "APPRUN_TEMPORAL_UI_PORT": str(free_port())}


def run_noisy(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], dict]:
    """The noisy profile on a stack of its own (the budgets are the
    gateway's settings): 12 s steady (4 s warm-up), a 12 s burst, 10 s after."""
    thresholds = write_thresholds(tmp_path / "noisy.yaml", NOISY_KPIS, warmup_s=4)
    result = run_locust(["--headless", "--load-profile", "noisy", "--run-time", "34s", "--burst-after", "12",
                         "--burst-for", "12", "--skip-preflight", "--thresholds", str(thresholds),
                         "--report-dir", str(tmp_path / "reports")],
                        {**embedded_stack_env(tmp_path / "state"), **env})
    return result, summary_of(tmp_path / "reports")


def test_noisy_profile_with_budgets_holds_the_quiet_tenant(tmp_path: Path) -> None:
    result, summary = run_noisy(tmp_path, {})
    summary_agrees_with_exit_code(summary, result.returncode)
    assert result.returncode == 0, ([k for k in summary["kpis"] if not k["passed"]], result.stderr[-3000:])
    rows = {row["tenant"]: row for row in summary["tenants"]}
    assert (rows["tenant-1"]["role"], rows["tenant-2"]["role"]) == ("quiet", "noisy")
    measured = {k["metric"]: k["measured"] for k in summary["kpis"]}
    # One source: the KPIs are the table's figures.
    assert measured["quiet_429"] == rows["tenant-1"]["refused_429"] == 0
    assert measured["noisy_429"] == rows["tenant-2"]["refused_429"] > 0
    assert measured["tenant_p95_ratio"] == rows["tenant-1"]["p95_ratio"]
    # Its 95 % interval (kpi/uncertainty.py) holds it, far below this file's bound of 10.
    ratio = next(k for k in summary["kpis"] if k["metric"] == "tenant_p95_ratio")
    low, high = ratio["interval"]
    assert low <= ratio["measured"] <= high < 10 and not ratio["undecided"]
    noisy_row = rows["tenant-2"]
    assert measured["burst_reached"] == round(noisy_row["rps_burst"] / noisy_row["rps_before"], 3)
    assert noisy_row["peak_rps_burst"] >= noisy_row["rps_burst"]
    assert rows["tenant-2"]["failures"] == 0          # its 429s (and its spins' ends) are expected
    start, end = summary["noisy"]["burst_window"]
    assert summary["noisy"]["tenant"] == "tenant-2" and 11 <= end - start <= 13
    folder = report_folder(tmp_path / "reports")
    assert (folder / "tenant_latency_over_time.png").stat().st_size > 1000
    assert "| tenant-1 |" in (folder / "summary.md").read_text()


def test_noisy_profile_without_budgets_fails(tmp_path: Path) -> None:
    result, summary = run_noisy(tmp_path, BUDGETS_OFF)
    summary_agrees_with_exit_code(summary, result.returncode)
    assert result.returncode == 3, result.stderr[-3000:]
    rows = kpis(summary)
    assert rows["noisy_429"] == ("count > 0", 0.0, False)       # nothing held charlie: the deterministic fail
    assert rows["quiet_429"][2] is True
