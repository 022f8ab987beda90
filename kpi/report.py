"""The POC summary report: reports/<timestamp>/ with summary.md, summary.json,
PNG charts (matplotlib) and Locust's own HTML and CSV; reports/latest
points at the newest."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from kpi import windows  # noqa: E402
from kpi.baseline import Delta  # noqa: E402
from kpi.collector import Collector  # noqa: E402
from kpi.evaluate import histogram_percentile, measured_text  # noqa: E402
from kpi.state import RunState  # noqa: E402
from kpi.tenants import UNTAGGED  # noqa: E402
from kpi.validity import breaches  # noqa: E402


def _mark_window(ax: Any, window: tuple[int, int] | None, t0: float) -> None:
    """Shade the seconds the KPIs judged (after the warm-up, until the load stopped)."""
    if window:
        ax.axvspan(window[0] - t0, window[1] - t0, color="tab:green", alpha=0.08, label="judged")


def _tenant_chart(report_dir: Path, collector: Collector, window: tuple[int, int] | None,
                  burst: list[int] | None, noisy_tenant: str | None) -> list[str]:
    """Each tenant's p95 service time per second, the burst shaded: in the
    noisy profile the quiet tenants' lines should not move with it."""
    by_tenant = {tenant or UNTAGGED: rows for tenant, rows in collector.per_second_by_tenant().items()}
    if not by_tenant:
        return []
    t0 = min(rows[0][0] for rows in by_tenant.values())
    fig, ax = plt.subplots(figsize=(9, 4))
    for tenant, rows in by_tenant.items():
        role = "" if noisy_tenant is None else (" (noisy)" if tenant == noisy_tenant else " (quiet)")
        ax.plot([second - t0 for second, _ in rows], [histogram_percentile(h, 95) or 0 for _, h in rows],
                linestyle="--" if role == " (noisy)" else "-", label=f"{tenant}{role} p95")
    _mark_window(ax, window, t0)
    if burst:
        ax.axvspan(burst[0] - t0, burst[1] - t0, color="tab:red", alpha=0.12, label=f"burst of {noisy_tenant}")
    ax.set(xlabel="s (by when each response ended)", ylabel="ms", yscale="log",
           title="p95 service time per tenant (http_req_duration{tenant:...}), per second")
    ax.legend(fontsize="small")
    fig.savefig(report_dir / "tenant_latency_over_time.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return ["tenant_latency_over_time.png"]


def _tenant_table(rows: list[dict[str, Any]], noisy: bool) -> list[str]:
    """The per-tenant table: the figures of summary.json's "tenants"."""
    if not rows:
        return []
    head = "| tenant | requests | failed | 429s (whole run) | p50 ms | p95 ms | p99 ms | p95 from due time ms |"
    rule = "|---|---|---|---|---|---|---|---|"
    if noisy:
        head += (" role | p95 before burst ms | p95 during burst ms | ratio | req/s before | "
                 "req/s during (busiest second) |")
        rule += "---|---|---|---|---|---|"
    lines = [head, rule]
    for r in rows:
        line = (f"| {r['tenant']} | {r['requests']} | {r['failures']} | {r['refused_429']} | {r['p50_ms']} | "
                f"{r['p95_ms']} | {r['p99_ms']} | {r['latency_p95_ms']} |")
        if noisy:
            line += (f" {r['role']} | {r['p95_before_ms']} | {r['p95_burst_ms']} | {r['p95_ratio']} | "
                     f"{r['rps_before']} | {r['rps_burst']} ({r['peak_rps_burst']}) |")
        lines.append(line)
    return lines


def _charts(report_dir: Path, collector: Collector, sampler: Any, window: tuple[int, int] | None) -> list[str]:
    rows = collector.per_second()
    made = []
    if rows:
        t0 = rows[0][0]
        seconds = [r[0] - t0 for r in rows]
        fig, ax = plt.subplots(figsize=(9, 4))
        for pct, colour in ((50, "tab:blue"), (95, "tab:orange"), (99, "tab:red")):
            ax.plot(seconds, [histogram_percentile(r[3], pct) or 0 for r in rows], color=colour,
                    label=f"p{pct} service time (http_req_duration)")
        for pct, colour in ((95, "tab:purple"), (99, "black")):
            ax.plot(seconds, [histogram_percentile(r[4], pct) or 0 for r in rows], color=colour, linestyle="--",
                    linewidth=2, zorder=3, label=f"p{pct} from the intended send time (http_req_latency)")
        _mark_window(ax, window, t0)
        ax.set(xlabel="s (by when each response ended)", ylabel="ms", title="Latency percentiles over time")
        ax.legend(fontsize="small")
        fig.savefig(report_dir / "latency_over_time.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(9, 4))
        series_labels = ((3, "service time (http_req_duration)"),
                         (4, "from the intended send time (http_req_latency)"))
        for column, label in series_labels:
            merged: dict[float, int] = {}
            for r in rows:
                for value, count in r[column].items():
                    merged[value] = merged.get(value, 0) + count
            values = sorted(v for v in merged if v > 0)
            ax.plot(values, [merged[v] for v in values], drawstyle="steps-mid", label=label)
        ax.set(xlabel="ms (buckets of 2 %)", ylabel="requests", title="Latency distribution", xscale="log",
               yscale="log")
        ax.legend(fontsize="small")
        fig.savefig(report_dir / "latency_distribution.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(9, 4))
        ax.plot(seconds, [r[1] for r in rows], label="requests/s")
        ax.plot(seconds, [r[2] for r in rows], label="failures/s", color="red")
        _mark_window(ax, window, t0)
        ax.set(xlabel="s", ylabel="per second", title="Throughput and failures over time")
        ax.legend()
        fig.savefig(report_dir / "rps_over_time.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        made += ["latency_over_time.png", "latency_distribution.png", "rps_over_time.png"]
    if sampler is not None and sampler.samples:
        samples = sampler.samples
        t0 = samples[0].t
        cpus = os.cpu_count() or 1
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
        for name in samples[-1].memory_mb:
            xs = [s.t - t0 for s in samples if name in s.memory_mb]
            top.plot(xs, [s.memory_mb[name] for s in samples if name in s.memory_mb], label=name)
            bottom.plot(xs, [s.cpu_percent[name] / cpus for s in samples if name in s.cpu_percent], label=name)
        xs = [s.t - t0 for s in samples]
        top.plot(xs, [s.total_memory_mb for s in samples], label="total", color="black", linestyle="--")
        bottom.plot(xs, [s.total_cpu_percent / cpus for s in samples], label="total", color="black", linestyle="--")
        # The KPIs' units: memory as sut_memory_mb measures it, CPU as % of the machine.
        _mark_window(top, window, t0)
        _mark_window(bottom, window, t0)
        top.set(ylabel="memory MB", title="Memory and CPU per component")
        bottom.set(xlabel="s", ylabel=f"CPU, % of the machine ({cpus} cores = 100)")
        top.legend()
        fig.savefig(report_dir / "resources_over_time.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        made.append("resources_over_time.png")
    return made


def _change(delta: Delta) -> str:
    return "-" if delta.change_percent is None else f"{delta.change_percent:+.1f} %"


def _limit(delta: Delta) -> str:
    if delta.limit_percent is None:
        return "-"
    return ("**REGRESSION**, " if delta.regressed else "ok, ") + f"worse by at most {delta.limit_percent:g} %"


def _floor_line(floor: dict[str, Any] | None) -> str:
    if not floor:
        return "floor: not measured (--skip-preflight)"
    return floor.get("description") or f"floor: not measured ({floor.get('error')})"


def _cost_line(cost: dict[str, Any]) -> str:
    if cost.get("stack_cpu_ms_per_request") is None:
        return "not measured"
    ratio = cost.get("ratio_to_floor")
    return f"{cost['stack_cpu_ms_per_request']:g} ms" + (f", {ratio:g}x the floor" if ratio is not None else "")


def _write_locust_csv(report_dir: Path, environment) -> list[str]:
    """Locust's own CSV files (the format of ``--csv``): per-route statistics,
    failures and exceptions."""
    import csv

    from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

    writer = StatsCSV(environment, PERCENTILES_TO_REPORT)
    files = {"locust_stats.csv": writer.requests_csv, "locust_failures.csv": writer.failures_csv,
             "locust_exceptions.csv": writer.exceptions_csv}
    for name, write_rows in files.items():
        with open(report_dir / name, "w", newline="") as handle:
            write_rows(csv.writer(handle))
    return list(files)


def write(report_dir: Path, environment, run: RunState, collector: Collector, embedded_stack: bool) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    options = environment.parsed_options
    verdicts = run.verdicts
    errors = sorted(environment.stats.errors.values(), key=lambda e: -e.occurrences)[:10]
    charts = _charts(report_dir, collector, run.sampler, run.judged_window)
    charts += _tenant_chart(report_dir, collector, run.judged_window, run.burst_window, run.noisy_tenant)
    data = {
        "verdict": run.verdict,
        "inconclusive_cause": run.inconclusive_cause or None,
        "validity": [check.to_json() for check in run.validity],
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "target": environment.host,
        "embedded_stack": embedded_stack,
        "profile": options.load_profile,
        "run_time_s": run.run_time_s,
        "thresholds_file": options.thresholds,
        "environment": {"python": platform.python_version(), "machine": platform.machine(),
                        "cpus": os.cpu_count(), "system": platform.platform()},
        "kpis": [v.to_json() for v in verdicts],
        "capacity_rps": run.capacity_rps,
        # A stress run in which no step above the capacity broke a KPI stopped below the stack's limit.
        "capacity_lower_bound": (windows.capacity_is_lower_bound(run.steps)
                                 if options.load_profile == "stress" and run.capacity_rps is not None else None),
        "stress_steps": run.steps,
        "aborted": run.aborted,
        "preflight": {k: v for k, v in run.preflight.items() if not isinstance(v, list)},
        "resources": run.resources,
        "baseline": {"source": run.baseline_source, "deltas": [d.to_json() for d in run.deltas]}
        if run.baseline_source else None,
        "latency": run.latency,
        "tenants": run.tenants,
        "noisy": {"tenant": run.noisy_tenant, "user": options.noisy_user, "burst_window": run.burst_window,
                  "burst_after_s": options.burst_after, "burst_for_s": options.burst_for,
                  "burst_multiple": options.burst_multiple} if run.noisy_tenant is not None else None,
        "dropped_iterations": run.dropped_iterations,
        "floor": run.preflight.get("floor"),
        "cost": run.cost,
        "judged_window": run.judged_window,
        "totals": run.totals,
        "errors": [{"method": e.method, "name": e.name, "error": str(e.error), "occurrences": e.occurrences}
                   for e in errors],
        "charts": charts,
    }
    data["csv_files"] = _write_locust_csv(report_dir, environment)
    (report_dir / "summary.json").write_text(json.dumps(data, indent=2, default=str))
    lines = [
        "# apprun POC summary report", "",
        f"**Verdict: {data['verdict']}** - generated {data['generated_at']}", "",
        "## Environment", "",
        f"- target: {data['target']} ({'embedded stack' if data['embedded_stack'] else 'external gateway'})",
        (f"- load profile: {data['profile']}, run time {data['run_time_s'] or 0:g} s, "
         f"thresholds {data['thresholds_file']}"),
        (f"- machine: {data['environment']['cpus']} CPUs, {data['environment']['system']}, "
         f"Python {data['environment']['python']}"),
        f"- {_floor_line(data['floor'])}",
        f"- stack CPU per request (judged window): {_cost_line(data['cost'])}",
        "", "## KPIs", "", "| KPI | threshold | measured | result |", "|---|---|---|---|",
    ]
    for v in verdicts:
        result = v.result if v.result == "PASS" else f"**{v.result}**"
        lines.append(f"| {v.key} | `{v.expression}` | {measured_text(v)} | {result} |")
    if run.deltas:
        lines += ["", f"### Against the baseline ({run.baseline_source})", "",
                  "| KPI | threshold | baseline | measured | change | regression limit |", "|---|---|---|---|---|---|"]
        lines += [f"| {d.metric} | `{d.threshold}` | {d.baseline} | {d.measured} | {_change(d)} | {_limit(d)} |"
                  for d in run.deltas]
    if data["inconclusive_cause"]:
        consequence = ("the KPIs above are neither a pass nor a fail of the system under test."
                       if breaches(run.validity) else
                       "one run cannot say which side of its bound the system under test is on. "
                       "The other KPIs are decided.")
        lines += ["", f"**INCONCLUSIVE**: {run.inconclusive_reason} ({data['inconclusive_cause']}); {consequence}"]
    if data["latency"]:
        lines += ["", "## Latency side by side (judged window, every request)", "",
                  "| metric | requests | p50 ms | p95 ms | p99 ms | max ms |", "|---|---|---|---|---|---|"]
        lines += [f"| {name} | {f['count']} | {f['p50']} | {f['p95']} | {f['p99']} | {f['max']} |"
                  for name, f in data["latency"].items()]
        lines += ["", ("`http_req_duration` is each request's service time; `http_req_latency` runs from when "
                       "the request was due on the user's fixed schedule to its response's end, so a stall "
                       "shows in full (no coordinated omission). Dropped iterations: "
                       f"{data['dropped_iterations']} (sends due within the run that were never made).")]
    if data["tenants"]:
        noisy = data["noisy"]
        lines += ["", "## Tenants (judged window)", ""]
        if noisy:
            lines += [(f"Noisy profile: {noisy['user']}'s {noisy['tenant']} asked to burst to "
                       f"{noisy['burst_multiple']:g}x its share for {noisy['burst_for_s']:g} s, "
                       f"{noisy['burst_after_s']:g} s after the load "
                       "began (shaded in the per-tenant chart); the other tenants are quiet. The ratio is the p95 "
                       "during the burst over the p95 before it (from the end of the warm-up); "
                       "`tenant_p95_ratio` is the worst quiet tenant's. `burst_reached` is the burst the "
                       "noisy tenant reached: its req/s during the burst over its req/s before it. Its busiest "
                       "second shows whether the burst came evenly: a burst user keeps its schedule with several "
                       "requests in flight, and only sends due while all of them were busy go out late, "
                       "together."), ""]
        lines += _tenant_table(data["tenants"], bool(noisy))
    lines += ["", "## Measurement validity (judged window)", "",
              "| budget | where | measured | budget | ok |", "|---|---|---|---|---|"]
    lines += [f"| {c['description']} | {c['where']} | {'not measured' if c['measured'] is None else c['measured']} | "
              f"{'not judged' if c['budget'] is None else c['budget']} | {'yes' if c['ok'] else '**no**'} |"
              for c in data["validity"]] or ["| - | - | not measured | - | - |"]
    if data["profile"] == "stress":
        capacity = windows.capacity_text(data["capacity_rps"], data["stress_steps"])
        lines += ["", f"Capacity (stress profile): {capacity}."]
    if data["stress_steps"]:
        lines += ["", "| stress step: offered req/s | measured req/s | every KPI held | broken | measurement |",
                  "|---|---|---|---|---|"]
        lines += [f"| {st['offered_rps']:g} | {st['measured_rps']:g} | {'yes' if st['held'] else 'no'} | "
                  f"{', '.join(st['broken']) or '-'} | {st.get('invalid') or 'valid'} |" for st in data["stress_steps"]]
    if data["aborted"]:
        lines += ["", f"Run aborted early by abort_on_fail: {data['aborted']}"]
    if data["resources"]:
        lines += ["", "## Resources by component (judged window)", "",
                  ("CPU in both readings of the seed's \"CPU < 50 %\": % of the whole machine "
                   f"({data['environment']['cpus']} cores = 100, `sut_cpu_percent`) and cores "
                   "(docker stats' reading, 1.0 = one core, `sut_cpu_cores`)."), "",
                  "| component | CPU avg, % of machine | CPU avg, cores | memory max, MB |", "|---|---|---|---|"]
        lines += [f"| {name} | {r['cpu_avg_percent']:g} | {r.get('cpu_avg_cores', 0):g} | {r['memory_max_mb']:g} |"
                  for name, r in data["resources"].items()]
    totals = run.totals
    lines += ["", "## Totals (the whole run, warm-up included)", "",
              (f"- requests: {totals.get('requests')}, failures: {totals.get('failures')}, "
               f"median {totals.get('median_ms')} ms, p95 {totals.get('p95_ms')} ms (http_req_duration)"),
              f"- pre-flight: {json.dumps(data['preflight'])}", "", "## Notable errors", ""]
    lines += [f"- {e['occurrences']} x {e['method']} {e['name']}: {e['error']}" for e in data["errors"]] or ["- none"]
    lines += ["", "## Charts", ""] + [f"![{c}]({c})" for c in charts]
    lines += ["", "Locust's own report: [locust.html](locust.html); its CSV files: "
              + ", ".join(f"[{name}]({name})" for name in data["csv_files"]), ""]
    path = report_dir / "summary.md"
    path.write_text("\n".join(lines))
    latest = report_dir.parent / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(report_dir.name)
    return path
