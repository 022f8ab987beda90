"""The Locust adapter for the KPI gate: wires the gate's parts to Locust's
events.  Options (kpi/options.py), the embedded stack (kpi/lifecycle.py),
the pre-flight (kpi/preflight.py), resource sampling (kpi/sampler.py), the
load shapes (kpi/shapes.py), the web UI (kpi/webui.py), the verdict
(kpi/evaluate.py, pure) and the report (kpi/report.py).

Exit codes (``locust --headless``): 0 every KPI held; 3 a KPI was missed;
4 INCONCLUSIVE: the generator or the machine exceeded a validity budget
(kpi/validity.py), whatever the KPIs say, or no KPI was missed but one is
UNDECIDED (its interval holds its bound, kpi/uncertainty.py, or a stress
run stopped below a rate it asks, kpi/windows.py); 2 invalid configuration (the
thresholds file, a --host that is not a loopback address, an embedded stack
that cannot start); 1 Locust's own errors.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.runners import WorkerRunner

from kpi import baseline, generator, live, preflight, tenants, webui, windows
from kpi import options as kpi_options
from kpi.evaluate import evaluate, format_table
from kpi.hooks import (
    after_load,
    after_load_hooks,
    collector,
    record_request,
    record_violation,
)
from kpi.lifecycle import EmbeddedStack, StackStartError, start_embedded_stack
from kpi.pacing import DUE_AT, PER_USER_RPS, latency_from_due
from kpi.profiles import run_time_limit
from kpi.sampler import summarize_by_component
from kpi.seed import SEED_USERS_BY_NAME
from kpi.shapes import KpiLoadShape
from kpi.target import loopback_error
from kpi.tenants import NO_TENANT, TENANT_CONTEXT_KEY
from kpi.thresholds import Thresholds, ThresholdsError, load

# Locustfiles written against the undivided plugin import these from here;
# new code imports them from kpi.hooks / kpi.pacing (side-effect free).
__all__ = ["PER_USER_RPS", "KpiLoadShape", "after_load", "record_violation"]

log = logging.getLogger("apprun.kpi")

SAMPLE_EVERY_S = 1.0
ABORT_CHECK_EVERY_S = 2.0
EXIT_KPI_MISSED = 3
EXIT_BAD_CONFIG = 2
EXIT_INCONCLUSIVE = 4

# The embedded stack this process started (None: --host, or a worker).
_stack: EmbeddedStack | None = None


@events.request.add_listener
def _on_request(request_type, name, response_time, exception, context=None, start_time=None,  # type: ignore[no-untyped-def]
                response=None, **_kwargs) -> None:
    response_time = response_time or 0.0
    context = context or {}
    record_request(request_type, name, response_time, exception is not None,
                   latency_from_due(context.get(DUE_AT), start_time, response_time),
                   context.get(TENANT_CONTEXT_KEY, NO_TENANT), getattr(response, "status_code", None))


@events.report_to_master.add_listener
def _ship(client_id, data, **_kwargs) -> None:  # type: ignore[no-untyped-def]
    data["apprun_kpi"] = collector.drain()


@events.worker_report.add_listener
def _merge(client_id, data, **_kwargs) -> None:  # type: ignore[no-untyped-def]
    if "apprun_kpi" in data:
        collector.merge(data["apprun_kpi"])


@events.reset_stats.add_listener
def _reset_stats() -> None:
    """Locust's "Reset stats" (web UI) also resets the KPI figures."""
    collector.drain()
    live.run.reset_stats()


def _is_worker(environment: Any) -> bool:
    return isinstance(environment.runner, WorkerRunner) or getattr(environment.parsed_options, "worker", False)


def _refuse(environment: Any, message: str, *args: Any) -> None:
    log.error(message, *args)
    environment.process_exit_code = EXIT_BAD_CONFIG
    raise SystemExit(EXIT_BAD_CONFIG)


@events.init.add_listener
def _init(environment, **_kwargs) -> None:  # type: ignore[no-untyped-def]
    global _stack
    options = environment.parsed_options
    if options is None:
        return
    if _is_worker(environment):
        generator.start("worker", with_machine=False)
        return
    generator.start("master" if getattr(options, "master", False) else "local", with_machine=True)
    try:
        environment.apprun_thresholds = load(options.thresholds)
    except ThresholdsError as exc:
        _refuse(environment, "invalid thresholds: %s", exc)
    if environment.host and loopback_error(environment.host):
        _refuse(environment, "refusing the target: %s", loopback_error(environment.host))
    environment.apprun_baseline = {}
    if options.baseline:
        try:
            environment.apprun_baseline = baseline.load(options.baseline)
        except baseline.BaselineError as exc:
            _refuse(environment, "invalid baseline: %s", exc)
        live.run.baseline_source = options.baseline
    elif environment.apprun_thresholds.regression:
        log.warning("regression: limits are judged only with --baseline <summary.json>")
    if options.load_profile == "noisy":
        refused = tenants.noisy_settings_error(options.burst_after, options.burst_for, options.burst_multiple,
                                               environment.apprun_thresholds.warmup_s,
                                               run_time_limit(options.load_profile, options.run_time))
        if refused:
            _refuse(environment, "invalid noisy profile: %s", refused)
        live.run.noisy_tenant = SEED_USERS_BY_NAME[options.noisy_user].tenant
    report_dir = Path(options.report_dir) / time.strftime("%Y%m%d-%H%M%S")
    report_dir.mkdir(parents=True, exist_ok=True)
    environment.apprun_report_dir = report_dir
    if not getattr(options, "html_file", None):
        options.html_file = str(report_dir / "locust.html")
    if not environment.host:
        try:
            _stack = start_embedded_stack()
        except StackStartError as exc:
            _refuse(environment, "the embedded stack did not start: %s", exc)
        environment.host = options.host = _stack.gateway_url
    # The web UI shows the user/ramp-up fields only where they are used.
    KpiLoadShape.use_common_options = options.load_profile == "plain"
    webui.install(environment)


@events.test_stop.add_listener
def _test_stop(environment, **_kwargs) -> None:  # type: ignore[no-untyped-def]
    if not _is_worker(environment):
        live.run.load_stopped_at = time.time()


@events.test_start.add_listener
def _test_start(environment, **_kwargs) -> None:  # type: ignore[no-untyped-def]
    if _is_worker(environment):
        return
    refused = loopback_error(environment.host or "")
    if refused:  # a host typed into the web UI's form is checked here
        log.error("refusing the target: %s", refused)
        environment.process_exit_code = EXIT_BAD_CONFIG
        gevent.spawn(environment.runner.stop)
        return
    run = live.run
    options = environment.parsed_options
    run.begin_run(options.load_profile, run_time_limit(options.load_profile, options.run_time))
    if not environment.parsed_options.skip_preflight:
        run.preflight_running = True
        try:
            run.preflight = preflight.measure(environment.host, *kpi_options.preflight_credentials(
                environment.parsed_options), _stack.secrets_file if _stack is not None else None)
        finally:
            run.preflight_running = False
    gevent.spawn(_sample_resources, environment)
    run.load_began_at = time.time()      # the noisy profile's burst counts from here
    if environment.shape_class is None:   # --class-picker's "Default" shape: no tick ends this run
        gevent.spawn_later(run.run_time_s, _end_unshaped_run, environment, run.started_at)
    thresholds: Thresholds = environment.apprun_thresholds
    if thresholds.abort_on_fail and environment.parsed_options.load_profile != "stress":
        gevent.spawn(_abort_watch, environment, thresholds)  # stress runs until a KPI breaks


def _end_unshaped_run(environment: Any, started_at: float | None) -> None:
    """Every run stops by itself: a run without the suite's load shape (the
    web UI's class picker) stops after its profile's run time, unless a
    newer run replaced it or it already stopped."""
    runner = environment.runner
    if live.run.started_at == started_at and runner is not None and runner.state not in ("stopped", "quitting"):
        log.info("run time %.0f s is up: stopping the run", live.run.run_time_s or 0)
        runner.stop()


def _sample_resources(environment: Any) -> None:
    from kpi.sampler import MetricsEndpointSampler, ProcessTreeSampler

    sampler = ProcessTreeSampler(_stack.pids) if _stack is not None else MetricsEndpointSampler(environment.host)
    live.run.sampler = sampler
    # Reading /proc for ~40 processes takes 20-35 ms; on the event loop that
    # delayed every user's timing once a second (the lag probe measured p99
    # 36 ms).  In a native thread it mostly waits on the kernel, GIL released.
    in_thread = isinstance(sampler, ProcessTreeSampler)
    while environment.runner is not None and environment.runner.state not in ("stopped", "quitting"):
        gevent.sleep(SAMPLE_EVERY_S)
        if in_thread:
            gevent.get_hub().threadpool.apply(sampler.sample)
        else:
            sampler.sample()


def _abort_watch(environment: Any, thresholds: Thresholds) -> None:
    gevent.sleep(thresholds.warmup_s + thresholds.abort_delay_s)
    while environment.runner is not None and environment.runner.state not in ("stopped", "quitting"):
        failed = live.decided_failures(live.live_verdicts(thresholds))
        if failed:
            log.error("abort_on_fail: %s %s measured %s", failed[0].key, failed[0].expression, failed[0].measured)
            live.run.aborted = f"{failed[0].key} {failed[0].expression}"
            environment.runner.quit()
            return
        gevent.sleep(ABORT_CHECK_EVERY_S)


@events.quitting.add_listener
def _quitting(environment, **_kwargs) -> None:  # type: ignore[no-untyped-def]
    if _is_worker(environment) or not hasattr(environment, "apprun_thresholds"):
        return
    try:
        _judge(environment)
    finally:
        for hook in after_load_hooks():
            try:
                hook(environment)
            except Exception as exc:  # noqa: BLE001 - the verdict is already out
                log.warning("after-load step %s failed: %s", hook.__name__, exc)
        if _stack is not None:
            _stack.stop()


def _judge(environment: Any) -> None:
    run = live.run
    thresholds: Thresholds = environment.apprun_thresholds
    start_s, end_s = live.judged_window(thresholds)
    run.judged_window = (start_s, end_s)
    figures = live.figures()
    snapshot = windows.snapshot_between(figures, start_s, end_s)
    if run.run_time_s is None:     # quitting without a run (the web UI's): the report still says it
        run.run_time_s = run_time_limit(environment.parsed_options.load_profile, environment.parsed_options.run_time)
    run.verdicts = live.judged_verdicts(evaluate(snapshot, thresholds))
    if environment.apprun_baseline:
        run.deltas = baseline.compare(run.verdicts, environment.apprun_baseline, thresholds.regression)
    run.latency = windows.latency_side_by_side(snapshot)
    run.tenants = windows.tenant_table(figures, start_s, end_s)
    run.totals = windows.totals(collector.snapshot(0, end_s + 3600))   # the whole run, cleanup included
    run.dropped_iterations = snapshot.counters.get("dropped_iterations", 0)
    run.cost = windows.stack_cost(windows.samples_between(figures.samples, start_s, end_s),
                                  sum(series.count for series in snapshot.requests.values()), snapshot.duration_s,
                                  run.preflight.get("floor"))
    run.validity = windows.validity_between(figures, thresholds, start_s, end_s)
    run.resources = summarize_by_component(windows.samples_between(figures.samples, start_s, end_s), figures.cpus)
    print("\napprun KPI gate (" + thresholds.source + ")")
    print(format_table(run.verdicts))
    for name, figures in run.latency.items():
        print(f"{name}: p50 {figures['p50']} ms, p95 {figures['p95']} ms, p99 {figures['p99']} ms, "
              f"max {figures['max']} ms over {figures['count']:.0f} requests")
    print(f"dropped_iterations: {run.dropped_iterations}")
    for row in run.tenants:
        print(f"tenant {row['tenant']}: {tenants.text(row)}")
    for delta in run.deltas:
        print(f"vs baseline: {delta.metric} {delta.threshold}: {delta.describe()}")
    print("measurement validity: " + "; ".join(check.describe() for check in run.validity))
    if run.profile == "stress":
        print(f"capacity (stress): {windows.capacity_text(run.capacity_rps, run.steps)}")
    from kpi import report

    path = report.write(environment.apprun_report_dir, environment, run, collector, _stack is not None)
    verdict = run.verdict
    if verdict == "INCONCLUSIVE":
        print(f"INCONCLUSIVE: {run.inconclusive_reason}: {run.inconclusive_cause}")
    print(f"verdict: {verdict}  report: {path}")
    if verdict == "INCONCLUSIVE":
        environment.process_exit_code = EXIT_INCONCLUSIVE
    elif verdict == "FAIL":
        environment.process_exit_code = EXIT_KPI_MISSED
    elif environment.process_exit_code is None:
        environment.process_exit_code = 0
