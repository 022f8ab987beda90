"""CPU per request of the stack, as ratios to the machine's floor, in one run.

First the floor (kpi/floor.py: a Flask hello served exactly like the
gateway), then for each request kind the CPU time the gateway process tree
and PostgreSQL (postmaster and every backend) spent per request during a
closed-loop window, and for a workflow start plus completion also the
Temporal dev server's and the worker's.  The load driver is a separate
process (geventhttpclient, keep-alive connections), so its CPU is not
counted.  Prints a table and writes the same figures as JSON.

Without ``--state-dir`` it starts its own embedded stack on free ports in a
temporary directory and stops it afterwards; with one, it measures that
running stack (``stack.json`` names the processes).  The services it
starts run the code of the current directory (``python -m gateway``), so
to measure another checkout run it from there:
``cd <checkout> && PYTHONPATH=$PWD python /path/to/bench/cost.py``.  Run it
under the shared lock when others use the machine:
``flock /tmp/apprun-load.lock python bench/cost.py``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kpi.floor import (  # noqa: E402
    DEFAULT_CONNECTIONS,
    UNIQUE_MARKER,
    FloorFigures,
    Measurement,
    RequestSpec,
    free_port,
    measure,
    measure_floor,
)
from kpi.process_cpu import cpu_difference, cpu_snapshot  # noqa: E402
from stack import stack  # noqa: E402
from stack.config import StackConfig  # noqa: E402
from wasm.build import example_wasm  # noqa: E402
from wasm.samples import PRICE_INPUT  # noqa: E402

WORKFLOW_DEADLINE_S = 120.0
WORKFLOW_POLL_S = 0.25
IDLE_BASELINE_S = 2.0
UNLIMITED_RATES = {f"{family}_{kind}": None for family in ("data", "functions", "workflows", "auth", "storage",
                                                             "workflow_starts") for kind in ("rps", "burst")}
SERVICE_COMPONENTS = {"gateway": ("gateway",), "postgres": ("postgres",), "workflow": ("temporal", "worker")}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", help="measure the running stack of this state directory "
                                            "(default: start one in a temporary directory)")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured window per request kind (default 3)")
    parser.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS,
                        help=f"keep-alive connections of the driver (default {DEFAULT_CONNECTIONS})")
    parser.add_argument("--workflows", type=int, default=30, help="workflows started and awaited (default 30)")
    parser.add_argument("--gateway-workers", type=int, default=1, help="gateway processes of a started stack")
    parser.add_argument("--only", help="comma-separated request kinds to measure (default: all)")
    parser.add_argument("--requests", type=int,
                        help="at most this many requests per kind, with no warm-up: for a --state-dir stack whose "
                             "tenant rate budgets are on, so a fast kind stays under its burst instead of "
                             "measuring 429s")
    parser.add_argument("--json", dest="json_path", default="reports/cost.json",
                        help="where to write the figures as JSON (default reports/cost.json)")
    args, _unknown = parser.parse_known_args(argv)  # ./dev bench passes the same arguments to every script
    return args


# -- the stack ---------------------------------------------------------------

class Target:
    """A running stack: its gateway URL, the PIDs of each component and an
    admin token for tenant 1."""

    def __init__(self, state: stack.StackState, seed_password: str) -> None:
        self.url = state.gateway_url
        self.components = {component: [state.processes[s].pid for s in services if s in state.processes]
                           for component, services in SERVICE_COMPONENTS.items()}
        response = requests.post(f"{self.url}/auth/login", timeout=30,
                                 json={"email": "alice@test.com", "password": seed_password})
        response.raise_for_status()
        self.token = response.json()["access_token"]

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **extra}


@contextlib.contextmanager
def started_stack(args: argparse.Namespace) -> Iterator[tuple[stack.StackState, str]]:
    if args.state_dir:
        config = StackConfig.from_env({"state_dir": args.state_dir})
        state = stack.StackState.load(config.state_file)
        if not state.gateway_url:
            raise SystemExit(f"no running stack in {config.state_dir} (stack.json has no gateway)")
        yield state, os.environ.get("APPRUN_SEED_PASSWORD", config.seed_password)
        return
    # Each request kind is driven far above a tenant's rate budgets (auth
    # 200/s, workflow starts 10/s): cheap 429s would then be measured instead
    # of the request.  The budgets stay on (their hook runs on every request,
    # as in the product), with every rate unlimited.
    os.environ.setdefault("APPRUN_BUDGET_PLANS", json.dumps({"free": UNLIMITED_RATES, "pro": UNLIMITED_RATES}))
    with tempfile.TemporaryDirectory(prefix="apprun-cost-") as tmp:
        config = StackConfig.from_env({
            "state_dir": Path(tmp) / "state", "pg_port": free_port(), "gateway_port": free_port(),
            "temporal_port": free_port(), "temporal_ui_port": free_port(),
            "gateway_workers": args.gateway_workers,
        }, environ={})
        state = stack.up(config, log=lambda message: None)
        try:
            yield state, config.seed_password
        finally:
            stack.down(config, log=lambda message: None)


# -- request kinds -------------------------------------------------------------

def request_kinds(target: Target, function_name: str) -> dict[str, RequestSpec]:
    json_headers = target.headers(**{"Content-Type": "application/json"})
    return {
        "healthz": RequestSpec("/healthz"),
        "auth_me": RequestSpec("/auth/me", headers=target.headers()),
        "data_list": RequestSpec("/data/products", headers=target.headers()),
        "data_count_exact": RequestSpec("/data/products?select=id,name,price&price=gte.1&order=name.asc&limit=10",
                                        headers=target.headers(Prefer="count=exact")),
        "data_insert": RequestSpec("/data/projects", "POST", {**json_headers, "Prefer": "return=minimal"},
                                   json.dumps({"name": f"cost-bench-{UNIQUE_MARKER}"})),
        "wasm_invoke": RequestSpec(f"/functions/{function_name}/invoke", "POST", json_headers,
                                   json.dumps(PRICE_INPUT)),
    }


def deploy_function(target: Target) -> str:
    name = f"cost-{uuid.uuid4().hex[:8]}"
    response = requests.put(f"{target.url}/functions/{name}", data=example_wasm("price_tax"), timeout=30,
                            headers=target.headers(**{"Content-Type": "application/wasm"}))
    response.raise_for_status()
    return name


def running_workflows(target: Target) -> int:
    response = requests.get(f"{target.url}/data/workflow_executions?select=workflow_id&status=eq.running&limit=1",
                            headers=target.headers(Prefer="count=exact"), timeout=30)
    response.raise_for_status()
    return int(response.headers["Content-Range"].rsplit("/", 1)[1])


def measure_workflows(target: Target, count: int, connections: int) -> tuple[Measurement, dict[str, float]]:
    """Start ``count`` registration workflows and wait until none runs; the
    CPU window covers both, minus what Temporal and the worker spend idle
    (measured just before) over the same time."""
    idle_before = cpu_snapshot({"workflow": target.components["workflow"]})
    time.sleep(IDLE_BASELINE_S)
    idle_cpu_s_per_s = cpu_difference(idle_before, cpu_snapshot({"workflow": target.components["workflow"]}))[
        "workflow"] / IDLE_BASELINE_S
    body = json.dumps({"workflow": "user_registration", "input": {"email": f"cost-{UNIQUE_MARKER}@test.com"}})
    spec = RequestSpec("/api/v1/workflows/execute", "POST", target.headers(**{"Content-Type": "application/json"}),
                       body)
    before = cpu_snapshot(target.components)
    started = time.perf_counter()
    starts = measure(target.url, spec, {}, WORKFLOW_DEADLINE_S, connections, count=count)
    deadline = time.monotonic() + WORKFLOW_DEADLINE_S
    while running_workflows(target) and time.monotonic() < deadline:
        time.sleep(WORKFLOW_POLL_S)
    elapsed = time.perf_counter() - started
    cpu = cpu_difference(before, cpu_snapshot(target.components))
    cpu["workflow"] = max(0.0, cpu["workflow"] - idle_cpu_s_per_s * elapsed)
    still_running = running_workflows(target)
    return (Measurement(starts.requests, starts.errors + still_running, elapsed, cpu, starts.first_error),
            {"idle_cpu_percent": round(idle_cpu_s_per_s * 100, 1), "still_running": still_running})


# -- output --------------------------------------------------------------------

def row(name: str, measured: Measurement, floor: FloorFigures, **extra: Any) -> dict[str, Any]:
    figures: dict[str, Any] = {"request": name, "requests": measured.requests, "errors": measured.errors,
                               "requests_per_s": round(measured.requests_per_s, 1)}
    for component in measured.cpu_s:
        ms = measured.cpu_ms_per_request(component)
        figures[f"{component}_cpu_ms"] = round(ms, 4)
        figures[f"{component}_ratio"] = round(ms / floor.cpu_ms_per_request, 2)
    if measured.first_error:
        figures["first_error"] = measured.first_error
    figures.update(extra)
    return figures


def rescaled(figures: dict[str, Any], floor: FloorFigures) -> dict[str, Any]:
    """The row's ratios against ``floor``."""
    figures = dict(figures)
    for key in [k for k in figures if k.endswith("_cpu_ms")]:
        figures[key.replace("_cpu_ms", "_ratio")] = round(figures[key] / floor.cpu_ms_per_request, 2)
    return figures


def print_table(floor: FloorFigures, rows: list[dict[str, Any]]) -> None:
    print(f"{floor.describe()} (mean of before and after)  ratios: CPU per request / floor CPU per request")
    header = (f"{'request':<18} {'req/s':>8} {'gateway ms':>11} {'x floor':>8} {'postgres ms':>12} {'x floor':>8} "
              f"{'temporal+worker ms':>19} {'x floor':>8} {'errors':>7}")
    print(header)
    for r in rows:
        workflow = (f"{r['workflow_cpu_ms']:>19.3f} {r['workflow_ratio']:>8.2f}" if "workflow_cpu_ms" in r
                    else f"{'-':>19} {'-':>8}")
        print(f"{r['request']:<18} {r['requests_per_s']:>8.0f} {r['gateway_cpu_ms']:>11.3f} {r['gateway_ratio']:>8.2f} "
              f"{r['postgres_cpu_ms']:>12.3f} {r['postgres_ratio']:>8.2f} {workflow} {r['errors']:>7}")
        if r.get("first_error"):
            print(f"{'':<18} first error: {r['first_error']}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    wanted = set(args.only.split(",")) if args.only else None
    # The floor is taken before and after the stack's figures and averaged:
    # on a shared machine the load of others drifts during a run.
    floor_before = measure_floor(args.seconds, args.connections)
    rows: list[dict[str, Any]] = []
    with started_stack(args) as (state, seed_password):
        target = Target(state, seed_password)
        kinds = request_kinds(target, deploy_function(target))
        for name, spec in kinds.items():
            if wanted is None or name in wanted:
                measured = measure(target.url, spec, {k: target.components[k] for k in ("gateway", "postgres")},
                                   args.seconds, args.connections, count=args.requests)
                rows.append(row(name, measured, floor_before))
        if (wanted is None or "workflow" in wanted) and args.workflows > 0 and target.components["workflow"]:
            measured, extra = measure_workflows(target, args.workflows, args.connections)
            rows.append(row("workflow", measured, floor_before, **extra))
    floor_after = measure_floor(args.seconds, args.connections)
    floor = FloorFigures(round((floor_before.cpu_ms_per_request + floor_after.cpu_ms_per_request) / 2, 4),
                         round((floor_before.requests_per_s + floor_after.requests_per_s) / 2, 1))
    rows = [rescaled(r, floor) for r in rows]
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
            "connections": args.connections, "seconds": args.seconds, "gateway_workers": args.gateway_workers,
            "floor": {"cpu_ms_per_request": floor.cpu_ms_per_request, "requests_per_s": floor.requests_per_s},
            "floor_before": {"cpu_ms_per_request": floor_before.cpu_ms_per_request,
                             "requests_per_s": floor_before.requests_per_s},
            "floor_after": {"cpu_ms_per_request": floor_after.cpu_ms_per_request,
                            "requests_per_s": floor_after.requests_per_s},
            "rows": rows}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    figures = run(args)
    print_table(FloorFigures(**figures["floor"]), figures["rows"])
    path = Path(args.json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"figures written to {path}")
    return 1 if any(r["errors"] for r in figures["rows"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
