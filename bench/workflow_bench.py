"""Workflow starts/s and completions/s through the gateway (HTTP, real
Temporal dev server and worker).

Starts ``--count`` user_registration workflows from ``--concurrency``
threads, then polls ``GET /api/v1/workflows/<id>`` until every one has
ended.  Prints the start rate (202s per second of the start phase), the
completion rate (completed workflows per second between the first
``started_at`` and the last ``ended_at`` the gateway recorded, so the
polling itself does not count) and the median start latency.  Without ``--host`` it uses the
embedded stack, starting what is not running and stopping only that.

With the embedded stack it also prints the CPU time per workflow of the
Temporal dev server and of the worker (kpi/process_cpu.py: whole process trees, from the
first start to the last completion, after ``--warmup`` workflows), and their
idle CPU per second measured just before.  ``--soak-minutes M --rate R``
then starts R workflows per second for M minutes and prints the dev
server's memory (PSS) every ``--sample-s`` seconds and its growth in MB/min
after the first minute (least squares).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402

from kpi import process_cpu  # noqa: E402
from kpi.process_cpu import TreeReading, cpu_difference  # noqa: E402
from kpi.sampler import proportional_set_size  # noqa: E402
from kpi.target import require_loopback  # noqa: E402
from stack import stack  # noqa: E402
from stack.config import StackConfig  # noqa: E402

POLL_EVERY_S = 0.2
DEADLINE_S = 300.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", help="gateway URL (loopback only); default: the embedded stack")
    parser.add_argument("--count", type=int, default=200, help="workflows to start (default 200)")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads (default 16)")
    parser.add_argument("--warmup", type=int, default=20, help="workflows run before measuring CPU (default 20)")
    parser.add_argument("--idle-s", type=float, default=5.0, help="seconds of idle CPU measured first (default 5)")
    parser.add_argument("--soak-minutes", type=float, default=0.0, help="then start --rate workflows/s this long")
    parser.add_argument("--rate", type=float, default=2.0, help="soak start rate, workflows/s (default 2)")
    parser.add_argument("--sample-s", type=float, default=15.0, help="soak memory sample interval (default 15 s)")
    args, _unknown = parser.parse_known_args()  # ./dev bench passes the same arguments to every script
    return args


def login(session: requests.Session, host: str) -> None:
    password = os.environ.get("APPRUN_SEED_PASSWORD", "apprun-dev-password")
    response = session.post(f"{host}/auth/login", json={"email": "alice@test.com", "password": password}, timeout=30)
    response.raise_for_status()
    session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"


def start_one(session: requests.Session, host: str) -> tuple[str, float]:
    body = {"workflow": "user_registration", "input": {"email": f"bench-{uuid.uuid4().hex[:12]}@test.com"}}
    started = time.perf_counter()
    response = session.post(f"{host}/api/v1/workflows/execute", json=body, timeout=30)
    if response.status_code != 202:
        raise RuntimeError(f"start: HTTP {response.status_code} {response.text[:200]}")
    return response.json()["workflow_id"], time.perf_counter() - started


def wait_all(session: requests.Session, host: str, ids: list[str]) -> dict[str, dict]:
    pending, outcome = set(ids), {}
    deadline = time.monotonic() + DEADLINE_S
    while pending and time.monotonic() < deadline:
        for workflow_id in list(pending):
            response = session.get(f"{host}/api/v1/workflows/{workflow_id}", timeout=30)
            if response.status_code == 429:   # a gateway with budgets (--host): poll again when told
                time.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            if response.status_code != 200:
                raise RuntimeError(f"status of {workflow_id}: HTTP {response.status_code} {response.text[:200]}")
            execution = response.json()
            if execution["status"] in ("completed", "failed"):
                outcome[workflow_id] = execution
                pending.discard(workflow_id)
        if pending:
            time.sleep(POLL_EVERY_S)
    outcome.update({workflow_id: {"status": "timed out"} for workflow_id in pending})
    return outcome


class ProcessTree:
    """CPU seconds and PSS of one stack service and its children."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)

    def processes(self) -> list[psutil.Process]:
        return [self.root] + self.root.children(recursive=True)

    def pss_mb(self) -> float:
        total = 0
        for proc in self.processes():
            try:
                total += proportional_set_size(proc)
            except (psutil.Error, OSError):
                pass
        return total / 1e6


def cpu_snapshot(trees: dict[str, ProcessTree]) -> dict[str, TreeReading]:
    return process_cpu.cpu_snapshot({name: [tree.root.pid] for name, tree in trees.items()})


def start_and_wait(session: requests.Session, host: str, count: int, concurrency: int) -> tuple[list, dict, float]:
    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda _: start_one(session, host), range(count)))
    start_phase = time.perf_counter() - began
    outcome = wait_all(session, host, [workflow_id for workflow_id, _ in results])
    return results, outcome, start_phase


def run(host: str, count: int, concurrency: int, trees: dict[str, ProcessTree], args: argparse.Namespace) -> None:
    require_loopback(host)
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=concurrency))
    login(session, host)
    if trees and args.warmup:
        start_and_wait(session, host, args.warmup, concurrency)
    idle: dict[str, float] = {}
    if trees and args.idle_s > 0:
        before = cpu_snapshot(trees)
        time.sleep(args.idle_s)
        idle = {name: cpu / args.idle_s for name, cpu in cpu_difference(before, cpu_snapshot(trees)).items()}
    cpu_before, wall_before = cpu_snapshot(trees), time.perf_counter()
    results, outcome, start_phase = start_and_wait(session, host, count, concurrency)
    cpu_used, wall = cpu_difference(cpu_before, cpu_snapshot(trees)), time.perf_counter() - wall_before
    completed_runs = [e for e in outcome.values() if e["status"] == "completed"]
    completed = len(completed_runs)
    total = (max(datetime.fromisoformat(e["ended_at"]) for e in completed_runs)
             - min(datetime.fromisoformat(e["started_at"]) for e in completed_runs)).total_seconds() \
        if completed_runs else float("inf")
    latencies_ms = [seconds * 1000 for _, seconds in results]
    print(f"workflows: {count} started from {concurrency} threads against {host}")
    print(f"starts/s:      {count / start_phase:7.1f}   "
          f"(start latency median {statistics.median(latencies_ms):.1f} ms, "
          f"max {max(latencies_ms):.1f} ms)")
    print(f"completions/s: {completed / total:7.1f}   ({completed} completed, "
          f"{count - completed} failed or timed out, {total:.1f} s from first start to last completion)")
    if trees:
        print(f"CPU per workflow over {wall:.1f} s (ms; idle CPU ms/s measured before, {args.idle_s:g} s):")
        for name in trees:
            used_ms = cpu_used[name] * 1000
            print(f"  {name:9s} {used_ms / count:7.2f} ms/workflow   (idle {idle.get(name, 0) * 1000:6.1f} ms/s, "
                  f"net of idle {(used_ms - idle.get(name, 0) * 1000 * wall) / count:7.2f})")
        both = sum(cpu_used[n] for n in ("temporal", "worker") if n in trees) * 1000 / count
        print(f"  Temporal + worker: {both:.2f} ms/workflow")
    if trees and args.soak_minutes > 0:
        soak(session, host, trees, args)


def soak(session: requests.Session, host: str, trees: dict[str, ProcessTree], args: argparse.Namespace) -> None:
    """Start --rate workflows/s for --soak-minutes; sample the dev server's PSS."""
    temporal = trees["temporal"]
    every_s = 1.0 / args.rate
    began = time.monotonic()
    end = began + args.soak_minutes * 60
    next_start, next_sample = began, began
    samples: list[tuple[float, float]] = []
    started = failed = 0
    cpu_before = cpu_snapshot(trees)
    with ThreadPoolExecutor(4) as pool:
        pending = []
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_sample:
                samples.append(((now - began) / 60, temporal.pss_mb()))
                print(f"  soak {samples[-1][0]:5.2f} min: Temporal PSS {samples[-1][1]:7.1f} MB, {started} started",
                      flush=True)
                next_sample += args.sample_s
            if now >= next_start:
                pending.append(pool.submit(start_one, session, host))
                started += 1
                next_start += every_s
            time.sleep(max(0.0, min(next_start, next_sample) - time.monotonic()))
        for future in pending:
            try:
                future.result()
            except RuntimeError:
                failed += 1
    samples.append((args.soak_minutes, temporal.pss_mb()))
    cpu_used = cpu_difference(cpu_before, cpu_snapshot(trees))
    warm = [(t, mb) for t, mb in samples if t >= 1.0]
    second_half = [(t, mb) for t, mb in samples if t >= args.soak_minutes / 2]
    slope = _slope(warm) if len(warm) >= 2 else float("nan")
    late_slope = _slope(second_half) if len(second_half) >= 2 else float("nan")
    print(f"soak: {started} workflows in {args.soak_minutes:g} min ({failed} refused); Temporal PSS "
          f"{samples[0][1]:.1f} -> {samples[-1][1]:.1f} MB; growth after the first minute {slope:.2f} MB/min, "
          f"over the second half {late_slope:.2f} MB/min")
    print("soak CPU per workflow (ms, idle included): "
          + ", ".join(f"{n} {cpu_used[n] * 1000 / max(1, started):.2f}" for n in trees))


def _slope(points: list[tuple[float, float]]) -> float:
    mean_t = sum(t for t, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (y - mean_y) for t, y in points) / var if var else float("nan")


def main() -> None:
    args = parse_args()
    if args.host:
        run(args.host.rstrip("/"), args.count, args.concurrency, {}, args)
        return
    # The bench starts and polls workflows far faster than a free tenant's
    # default budgets (10 starts/s, 200 workflow requests/s): the stack it
    # starts gets alice's rates on both unlimited.
    os.environ.setdefault("APPRUN_BUDGET_PLANS", '{"free": {"workflow_starts_rps": null, "workflows_rps": null}}')
    config = StackConfig.from_env()
    state, started = stack.up_missing(config, log=lambda message: None)
    trees = {name: ProcessTree(state.processes[name].pid)
             for name in ("temporal", "worker", "gateway", "postgres") if name in state.processes}
    try:
        run(state.gateway_url, args.count, args.concurrency, trees, args)
    finally:
        stack.down(config, log=lambda message: None, only=started)


if __name__ == "__main__":
    main()
