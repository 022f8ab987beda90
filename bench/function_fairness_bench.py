"""Alice's WASM latency with and without charlie's spinning burst (issue 13).

For each setting (per-tenant WASM budgets on, then off) it starts a private
embedded stack (temp state dir, free ports), deploys ``add`` for alice
(tenant 1, Free) and a spinning function for charlie (tenant 2, Pro,
``?fuel=1e9&timeout_ms=<ceiling>``), then measures alice's sequential
``add`` calls over HTTP:

* quiet: nobody else calls;
* burst: ``--spinners`` threads of charlie's invoke the spinning function
  in a loop (the attack of issue 13 used 4, one per pool thread).

It prints alice's p50/p95/max, the burst/quiet p95 ratio, and charlie's
outcomes.  Run it under the shared lock; the figures move with the machine,
so compare the ratios of one run:
``flock /tmp/apprun-load.lock python bench/function_fairness_bench.py``.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.settings import Settings
from stack import stack
from stack.config import StackConfig
from wasm.build import example_wasm

PASSWORD = "apprun-bench-password"
ADD = {"export": "add", "args": [2, 3]}
# 16 dependent square roots per iteration: ~21 fuel and hundreds of cycles,
# so 1e9 fuel outlasts the wall-clock limit (see tests/test_function_fairness.py).
_CHAIN = "(f64.add (local.get $x) (f64.const 7.0))"
for _ in range(16):
    _CHAIN = f"(f64.sqrt {_CHAIN})"
SPIN = f'(module (func (export "spin") (local $x f64) (loop (local.set $x {_CHAIN}) (br 0))))'


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="measuring time per phase (default 6)")
    parser.add_argument("--spinners", type=int, default=4, help="charlie's concurrent callers (default 4)")
    args, _unknown = parser.parse_known_args()  # ./dev bench passes the same arguments to every script
    return args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def login(url: str, email: str) -> dict[str, str]:
    response = requests.post(f"{url}/auth/login", json={"email": email, "password": PASSWORD}, timeout=30)
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def alice_latencies_ms(session: requests.Session, url: str, seconds: float) -> tuple[list[float], Counter]:
    latencies, statuses = [], Counter()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        response = session.post(f"{url}/functions/bench-add/invoke", json=ADD, timeout=60)
        latencies.append((time.perf_counter() - started) * 1000)
        statuses[response.status_code] += 1
    return latencies, statuses


def charlie_burst(url: str, headers: dict[str, str], stop: threading.Event, outcomes: Counter) -> None:
    session = requests.Session()
    session.headers.update(headers)
    while not stop.is_set():
        response = session.post(f"{url}/functions/bench-spin/invoke", json={"export": "spin", "args": []},
                                timeout=60)
        outcomes[response.status_code] += 1
        if response.status_code == 429:
            time.sleep(0.02)  # an attacker retries at once; a short pause keeps the client's CPU out of it


def run_setting(budgets: bool, args: argparse.Namespace) -> dict[str, object]:
    os.environ["APPRUN_FUNCTION_BUDGETS_ENABLED"] = "1" if budgets else "0"
    ceiling = Settings.from_env().function_timeout_ceiling_ms
    with tempfile.TemporaryDirectory(prefix="apprun-fair-bench-") as tmp:
        config = StackConfig.from_env({
            "state_dir": Path(tmp) / "state", "pg_port": free_port(), "gateway_port": free_port(),
            "temporal_port": free_port(), "temporal_ui_port": free_port(), "seed_password": PASSWORD,
            "start_worker": False}, environ={})
        state = stack.up(config, log=lambda message: None)
        try:
            url = state.gateway_url
            alice, charlie = login(url, "alice@test.com"), login(url, "charlie@test.com")
            for headers, name, body, kind, query in (
                    (alice, "bench-add", example_wasm("add"), "application/wasm", ""),
                    (charlie, "bench-spin", SPIN, "text/plain", f"?fuel=1000000000&timeout_ms={ceiling}")):
                response = requests.put(f"{url}/functions/{name}{query}", data=body, timeout=60,
                                        headers={**headers, "Content-Type": kind})
                response.raise_for_status()
            session = requests.Session()
            session.headers.update(alice)
            alice_latencies_ms(session, url, 1.0)  # warm-up
            quiet, quiet_status = alice_latencies_ms(session, url, args.seconds)
            stop, outcomes = threading.Event(), Counter()
            burst_threads = [threading.Thread(target=charlie_burst, args=(url, charlie, stop, outcomes))
                             for _ in range(args.spinners)]
            for thread in burst_threads:
                thread.start()
            time.sleep(0.3)  # let the burst take the pool
            burst, burst_status = alice_latencies_ms(session, url, args.seconds)
            stop.set()
            for thread in burst_threads:
                thread.join(60)
        finally:
            stack.down(config, log=lambda message: None)
    return {"quiet": quiet, "burst": burst, "quiet_status": quiet_status, "burst_status": burst_status,
            "charlie": outcomes}


def main() -> None:
    args = parse_args()
    print(f"alice's add over HTTP, sequential; charlie: {args.spinners} callers of a spinning function")
    print(f"{'budgets':<8} {'phase':<6} {'calls':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  statuses")
    for budgets in (True, False):
        result = run_setting(budgets, args)
        for phase in ("quiet", "burst"):
            values = result[phase]
            print(f"{'on' if budgets else 'off':<8} {phase:<6} {len(values):>6} {statistics.median(values):>8.1f} "
                  f"{percentile(values, 0.95):>8.1f} {max(values):>8.1f}  {dict(result[phase + '_status'])}")
        ratio = percentile(result["burst"], 0.95) / percentile(result["quiet"], 0.95)
        print(f"{'':<8} p95 burst/quiet = {ratio:.2f}x; charlie's spin calls by status: {dict(result['charlie'])}")


if __name__ == "__main__":
    main()
