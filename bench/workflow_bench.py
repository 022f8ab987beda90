"""Workflow starts/s and completions/s through the gateway (HTTP, real
Temporal dev server and worker).

Starts ``--count`` user_registration workflows from ``--concurrency``
threads, then polls ``GET /api/v1/workflows/<id>`` until every one has
ended.  Prints the start rate (202s per second of the start phase), the
completion rate (completed workflows per second between the first
``started_at`` and the last ``ended_at`` the gateway recorded, so the
polling itself does not count) and the median start latency.  Without ``--host`` it uses the
embedded stack, starting what is not running and stopping only that.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from datetime import datetime
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

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
            execution = session.get(f"{host}/api/v1/workflows/{workflow_id}", timeout=30).json()
            if execution["status"] in ("completed", "failed"):
                outcome[workflow_id] = execution
                pending.discard(workflow_id)
        if pending:
            time.sleep(POLL_EVERY_S)
    outcome.update({workflow_id: {"status": "timed out"} for workflow_id in pending})
    return outcome


def run(host: str, count: int, concurrency: int) -> None:
    require_loopback(host)
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=concurrency))
    login(session, host)
    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda _: start_one(session, host), range(count)))
    start_phase = time.perf_counter() - began
    outcome = wait_all(session, host, [workflow_id for workflow_id, _ in results])
    completed_runs = [e for e in outcome.values() if e["status"] == "completed"]
    completed = len(completed_runs)
    total = (max(datetime.fromisoformat(e["ended_at"]) for e in completed_runs)
             - min(datetime.fromisoformat(e["started_at"]) for e in completed_runs)).total_seconds() \
        if completed_runs else float("inf")
    latencies_ms = [seconds * 1000 for _, seconds in results]
    print(f"workflows: {count} started from {concurrency} threads against {host}")
    print(f"starts/s:      {count / start_phase:7.1f}   (start latency median {statistics.median(latencies_ms):.1f} ms, "
          f"max {max(latencies_ms):.1f} ms)")
    print(f"completions/s: {completed / total:7.1f}   ({completed} completed, "
          f"{count - completed} failed or timed out, {total:.1f} s from first start to last completion)")


def main() -> None:
    args = parse_args()
    if args.host:
        run(args.host.rstrip("/"), args.count, args.concurrency)
        return
    config = StackConfig.from_env()
    state, started = stack.up_missing(config, log=lambda message: None)
    try:
        run(state.gateway_url, args.count, args.concurrency)
    finally:
        stack.down(config, log=lambda message: None, only=started)


if __name__ == "__main__":
    main()
