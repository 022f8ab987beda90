"""The Locust adapter for the KPI gate: options, embedded stack, collection,
load shapes, verdict, exit code, web UI tab and report.

Exit codes (``locust --headless``): 0 every KPI held; 3 a KPI was missed;
2 invalid configuration (the thresholds file, a --host that is not a
loopback address, an embedded stack that cannot start); 1 Locust's own errors.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import gevent
from locust import LoadTestShape, events
from locust.runners import WorkerRunner

from kpi import preflight, windows
from kpi.collector import Collector
from kpi.evaluate import Snapshot, Verdict, evaluate, format_table
from kpi.sampler import summarize_by_component
from kpi.target import loopback_error
from kpi.thresholds import Thresholds, ThresholdsError, load

log = logging.getLogger("apprun.kpi")

PER_USER_RPS = 5.0           # each simulated user's request rate (constant_throughput)
SAMPLE_EVERY_S = 1.0
EXIT_KPI_MISSED = 3
EXIT_BAD_CONFIG = 2
RAMP_S = 10
# The kpi profile offers the RPS target plus 2 %: a KPI written "rps > 500"
# is then judged at its rate, not failed by a request or two of jitter.
KPI_RATE_HEADROOM = 0.02
STRESS_STEP_S = 15
STRESS_STEP_FACTOR = 1.25
STRESS_SETTLE_S = 3          # the first seconds of a stress step (users still spawning) are not judged

collector = Collector()
_state: dict[str, Any] = {"verdicts": [], "capacity_rps": None, "stack_started": [], "sampler": None,
                          "started_at": None, "preflight": {}, "steps": [],
                          "capacity_window": None}


# Run once the load is over, on the master or the local runner only, after
# the verdict and before the embedded stack stops (see after_load()).
_after_load_hooks: list[Callable[[Any], None]] = []


def after_load(hook: Callable[[Any], None]) -> Callable[[Any], None]:
    """Register ``hook(environment)`` to run when Locust quits, after the
    verdict.  Not at test_stop: in a distributed run the master fires
    test_stop *before* it tells the workers to quit, so work done there
    races their last requests (a cleanup there made a row vanish under a
    read-back and counted a false lost write)."""
    _after_load_hooks.append(hook)
    return hook


def record_violation(counter: str) -> None:
    collector.count(int(time.time()), counter)


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    group = parser
    group.add_argument("--thresholds", default="thresholds.yaml",
                       help="KPI thresholds file (see README)")
    group.add_argument("--load-profile", default="kpi", choices=["kpi", "stress", "plain"],
                       help="kpi: hold the RPS KPI; stress: step up until a KPI breaks; plain: --users/--spawn-rate")
    group.add_argument("--report-dir", default="reports", help="where reports/<timestamp>/ is written")
    group.add_argument("--skip-preflight", action="store_true", default=False,
                       help="skip the WASM/auth pre-flight (their KPIs then have no samples)")


@events.request.add_listener
def _on_request(request_type, name, response_time, exception, **_kwargs) -> None:
    collector.request(int(time.time()), request_type, name, response_time or 0.0, exception is not None)


@events.report_to_master.add_listener
def _ship(client_id, data, **_kwargs) -> None:
    data["apprun_kpi"] = collector.drain()


@events.worker_report.add_listener
def _merge(client_id, data, **_kwargs) -> None:
    if "apprun_kpi" in data:
        collector.merge(data["apprun_kpi"])


def _is_worker(environment) -> bool:
    return isinstance(environment.runner, WorkerRunner) or getattr(environment.parsed_options, "worker", False)


@events.init.add_listener
def _init(environment, **_kwargs) -> None:
    options = environment.parsed_options
    if options is None:
        return
    if _is_worker(environment):
        return
    try:
        environment.apprun_thresholds = load(options.thresholds)
    except ThresholdsError as exc:
        log.error("invalid thresholds: %s", exc)
        environment.process_exit_code = EXIT_BAD_CONFIG
        raise SystemExit(EXIT_BAD_CONFIG)
    if environment.host and loopback_error(environment.host):
        log.error("refusing the target: %s", loopback_error(environment.host))
        environment.process_exit_code = EXIT_BAD_CONFIG
        raise SystemExit(EXIT_BAD_CONFIG)
    report_dir = Path(options.report_dir) / time.strftime("%Y%m%d-%H%M%S")
    report_dir.mkdir(parents=True, exist_ok=True)
    environment.apprun_report_dir = report_dir
    if not getattr(options, "html_file", None):
        options.html_file = str(report_dir / "locust.html")
    if not environment.host:
        _start_embedded_stack(environment)
    _install_web_tab(environment)


def _start_embedded_stack(environment) -> None:
    from stack import stack
    from stack.config import StackConfig

    config = StackConfig.from_env()
    log.info("no --host: starting the embedded stack in %s", config.state_dir)
    try:
        state, started = stack.up_missing(config, log=log.info)
    except (RuntimeError, TimeoutError, OSError) as exc:  # the same errors `apprun-stack up` reports
        log.error("the embedded stack did not start: %s", exc)
        environment.process_exit_code = EXIT_BAD_CONFIG
        raise SystemExit(EXIT_BAD_CONFIG) from None
    environment.host = state.gateway_url
    environment.parsed_options.host = state.gateway_url
    _state["stack_config"] = config
    _state["stack_started"] = started
    _state["stack_pids"] = {name: proc.pid for name, proc in state.processes.items()}


def _stop_embedded_stack() -> None:
    """Stops only the services this run started; a stack that was already
    running is left as it was."""
    config = _state.get("stack_config")
    if config is None or not _state["stack_started"]:
        return
    from stack import stack

    stack.down(config, log=log.info, only=_state["stack_started"])
    _state["stack_started"] = []


@events.test_stop.add_listener
def _test_stop(environment, **_kwargs) -> None:
    if not _is_worker(environment):
        _state["load_stopped_at"] = time.time()


@events.test_start.add_listener
def _test_start(environment, **_kwargs) -> None:
    if _is_worker(environment):
        return
    refused = loopback_error(environment.host or "")
    if refused:  # a host typed into the web UI's form is checked here
        log.error("refusing the target: %s", refused)
        environment.process_exit_code = EXIT_BAD_CONFIG
        gevent.spawn(environment.runner.stop)
        return
    _state["started_at"] = time.time()
    _state.update(load_stopped_at=None, steps=[], capacity_rps=None, capacity_window=None, aborted=None)
    if not environment.parsed_options.skip_preflight:
        _run_preflight(environment)
    gevent.spawn(_sample_resources, environment)
    thresholds: Thresholds = environment.apprun_thresholds
    if thresholds.abort_on_fail and options_profile(environment) != "stress":  # stress runs until a KPI breaks
        gevent.spawn(_abort_watch, environment, thresholds)


def _run_preflight(environment) -> None:
    host = environment.host
    figures: dict[str, Any] = {}
    try:
        from locustfiles.personas import login_token

        token = login_token(host, "alice@test.com")
        figures.update(preflight.wasm_figures(host, token))
        if _state.get("stack_config") is not None:
            secrets = json.loads((_state["stack_config"].state_dir / "secrets.json").read_text())
            figures["auth_checks_per_s"] = preflight.auth_checks_in_process(
                {"jwt_secret": os.environ.get("APPRUN_JWT_SECRET") or secrets["jwt_secret"]}, token)
            figures["auth_method"] = "in process (JWT verify + Casbin enforce, uncached)"
        else:
            figures["auth_checks_per_s"] = preflight.auth_checks_over_http(host, token)
            figures["auth_method"] = f"HTTP /auth/me over {preflight.AUTH_CONCURRENCY} connections"
    except Exception as exc:  # noqa: BLE001 - reported as missing samples, never as a pass
        log.error("pre-flight failed: %s", exc)
        figures["error"] = str(exc)
    _state["preflight"] = figures
    cold, hot = figures.get("wasm_cold_start_ms") or [None], preflight.median(figures.get("wasm_hot_us", []))
    log.info("pre-flight: auth %.0f checks/s (%s), wasm cold start %s ms, hot median %s us",
             figures.get("auth_checks_per_s", 0), figures.get("auth_method", "not measured"),
             "n/a" if cold[0] is None else f"{cold[0]:.2f}", "n/a" if hot is None else f"{hot:.0f}")


def _sample_resources(environment) -> None:
    from kpi.sampler import MetricsEndpointSampler, ProcessTreeSampler

    sampler = ProcessTreeSampler(_state["stack_pids"]) if _state.get("stack_pids") else \
        MetricsEndpointSampler(environment.host)
    _state["sampler"] = sampler
    while environment.runner is not None and environment.runner.state not in ("stopped", "quitting"):
        gevent.sleep(SAMPLE_EVERY_S)
        sampler.sample()


def _figures() -> windows.RunFigures:
    sampler = _state.get("sampler")
    return windows.RunFigures(collector, sampler.samples if sampler is not None else (), _state["preflight"],
                              os.cpu_count() or 1)


def judged_window(environment) -> tuple[int, int]:
    started = _state["started_at"] or time.time()
    return windows.judged_window(started, collector.first_second(int(started)), _state.get("load_stopped_at"),
                                 environment.apprun_thresholds.warmup_s, time.time(),
                                 _state.get("capacity_window"))


def snapshot_now(environment) -> Snapshot:
    return windows.snapshot_between(_figures(), *judged_window(environment))


def _abort_watch(environment, thresholds: Thresholds) -> None:
    gevent.sleep(thresholds.warmup_s + thresholds.abort_delay_s)
    while environment.runner is not None and environment.runner.state not in ("stopped", "quitting"):
        verdicts = evaluate(snapshot_now(environment), thresholds)
        failed = [v for v in verdicts if not v.passed and v.measured is not None]
        if failed:
            log.error("abort_on_fail: %s %s measured %s", failed[0].key, failed[0].expression, failed[0].measured)
            _state["aborted"] = f"{failed[0].key} {failed[0].expression}"
            environment.runner.quit()
            return
        gevent.sleep(2)


class KpiLoadShape(LoadTestShape):
    """``--load-profile kpi``: ramp to the RPS KPI's arrival rate and hold it.
    ``--load-profile stress``: step the rate up until a latency/error KPI breaks.
    ``--load-profile plain``: honour --users / --spawn-rate like plain Locust."""

    def tick(self):
        environment = self.runner.environment
        options = environment.parsed_options
        run_time = self.get_run_time()
        if options.run_time and run_time > options.run_time:
            return None
        thresholds: Thresholds = environment.apprun_thresholds
        target_rps = thresholds.target("http_reqs", "rps") or 100.0
        if options.load_profile == "plain":
            return options.num_users or 1, options.spawn_rate or 1
        if options.load_profile == "kpi":
            users = math.ceil(target_rps * (1 + KPI_RATE_HEADROOM) / PER_USER_RPS)
            return users, max(1.0, users / RAMP_S)
        return self._stress(environment, thresholds, target_rps, run_time)

    def _stress(self, environment, thresholds: Thresholds, target_rps: float, run_time: float):
        step = int(run_time // STRESS_STEP_S)
        steps: list = _state["steps"]
        if step > len(steps):  # a step just ended: judge its window
            _judge_stress_step(thresholds, target_rps * 0.5 * STRESS_STEP_FACTOR ** len(steps))
            if not steps[-1]["latency_held"]:
                log.warning("stress: a latency/error KPI broke at %.0f req/s offered", steps[-1]["offered_rps"])
                return None
        rate = target_rps * 0.5 * STRESS_STEP_FACTOR ** step
        users = math.ceil(rate / PER_USER_RPS)
        return users, max(1.0, users / 5)


def _judge_stress_step(thresholds: Thresholds, offered_rps: float) -> None:
    """A step is judged on its last STRESS_STEP_S - STRESS_SETTLE_S seconds
    (kpi/windows.py says with which KPIs)."""
    end_s = int(time.time())
    step = windows.judge_stress_step(_figures(), thresholds, offered_rps, end_s - STRESS_STEP_S + STRESS_SETTLE_S,
                                     end_s)
    _state["steps"].append(step)
    log.info("stress: %.0f req/s offered, %.0f measured, %s", offered_rps, step["measured_rps"],
             "every KPI held" if step["held"] else "broke " + ", ".join(step["broken"]))
    best_rps, best_window = windows.capacity(_state["steps"])
    if best_rps is not None:
        _state["capacity_rps"], _state["capacity_window"] = best_rps, best_window


def options_profile(environment) -> str:
    return getattr(environment.parsed_options, "load_profile", "kpi")


@events.quitting.add_listener
def _quitting(environment, **_kwargs) -> None:
    if _is_worker(environment) or not hasattr(environment, "apprun_thresholds"):
        return
    try:
        start_s, end_s = judged_window(environment)
        _state["judged_window"] = (start_s, end_s)
        figures = _figures()
        verdicts = evaluate(windows.snapshot_between(figures, start_s, end_s), environment.apprun_thresholds)
        _state["verdicts"] = verdicts
        _state["resources"] = summarize_by_component(windows.samples_between(figures.samples, start_s, end_s),
                                                     figures.cpus)
        passed = all(v.passed for v in verdicts)
        print("\napprun KPI gate (" + environment.apprun_thresholds.source + ")")
        print(format_table(verdicts))
        if _state.get("capacity_rps") is not None:
            print(f"capacity (stress): {_state['capacity_rps']} req/s held every KPI; "
                  "the table above judges that step")
        elif options_profile(environment) == "stress":
            print("capacity (stress): no step held every KPI; the table above judges the whole run")
        from kpi import report

        path = report.write(environment.apprun_report_dir, environment, verdicts, _state, collector)
        print(f"verdict: {'PASS' if passed else 'FAIL'}  report: {path}")
        if not passed:
            environment.process_exit_code = EXIT_KPI_MISSED
        elif environment.process_exit_code is None:
            environment.process_exit_code = 0
    finally:
        for hook in _after_load_hooks:
            try:
                hook(environment)
            except Exception as exc:  # noqa: BLE001 - the verdict is already out
                log.warning("after-load step %s failed: %s", hook.__name__, exc)
        _stop_embedded_stack()


KPI_TAB_KEY = "apprun-kpis"


def _install_web_tab(environment) -> None:
    """A "KPIs" tab inside Locust's web UI (its extended tabs, fed through
    /stats/requests), plus a page of our own at /kpi with the thresholds file
    and /kpi.json with the same data for scripts."""
    if environment.web_ui is None:
        return
    from flask import request

    web_ui = environment.web_ui
    app = web_ui.app
    web_ui.template_args["extended_tabs"] = [{"title": "KPIs", "key": KPI_TAB_KEY}]
    web_ui.template_args["extended_tables"] = [{"key": KPI_TAB_KEY, "structure": [
        {"key": "kpi", "title": "KPI"}, {"key": "threshold", "title": "threshold"},
        {"key": "measured", "title": "measured"}, {"key": "result", "title": "result"}]}]

    def live_verdicts() -> list[Verdict]:
        return evaluate(snapshot_now(environment), environment.apprun_thresholds) if _state["started_at"] else []

    @app.after_request
    def _add_kpi_rows(response):  # type: ignore[no-untyped-def]
        if request.path != "/stats/requests" or not response.is_json:
            return response
        rows = [{"kpi": v.key, "threshold": v.expression,
                 "measured": "no samples" if v.measured is None else f"{v.measured:g}",
                 "result": "PASS" if v.passed else "FAIL"} for v in live_verdicts()]
        thresholds: Thresholds = environment.apprun_thresholds
        rows.append({"kpi": "(thresholds file)", "threshold": thresholds.source,
                     "measured": f"warm-up {thresholds.warmup_s:g} s not judged; full text at /kpi", "result": ""})
        response.set_data(json.dumps({**response.get_json(), "extended_stats": [{"key": KPI_TAB_KEY, "data": rows}]}))
        return response

    @app.route("/kpi.json")
    def kpi_json():  # type: ignore[no-untyped-def]
        return {"verdicts": [v.to_json() for v in live_verdicts()],
                "thresholds": Path(environment.apprun_thresholds.source).read_text()}

    @app.route("/kpi")
    def kpi_page():  # type: ignore[no-untyped-def]
        return KPI_PAGE

    log.info("KPIs: the 'KPIs' tab of the web UI; thresholds and live values also at %s/kpi",
             f"http://{environment.parsed_options.web_host or '127.0.0.1'}:{environment.parsed_options.web_port}")


KPI_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>apprun KPIs</title>
<style>body{font-family:sans-serif;margin:2em}td,th{padding:.3em 1em;border-bottom:1px solid #ccc}
.PASS{color:#080}.FAIL{color:#c00}pre{background:#f4f4f4;padding:1em}</style></head><body>
<h1>apprun KPI gate</h1><p>Live, refreshed every 2 s (warm-up excluded).</p>
<table id="t"><tr><th>KPI</th><th>threshold</th><th>measured</th><th>result</th></tr></table>
<h2>thresholds.yaml</h2><pre id="y"></pre>
<script>
async function refresh(){const r=await fetch('kpi.json');const d=await r.json();
const t=document.getElementById('t');t.innerHTML='<tr><th>KPI</th><th>threshold</th><th>measured</th><th>result</th></tr>';
for(const v of d.verdicts){const s=v.passed?'PASS':'FAIL';const row=t.insertRow();
[v.metric,v.threshold,v.measured===null?'no samples':v.measured,s].forEach((c,i)=>{const x=row.insertCell();x.textContent=c;if(i==3)x.className=s;});}
document.getElementById('y').textContent=d.thresholds;}
refresh();setInterval(refresh,2000);
</script></body></html>"""
