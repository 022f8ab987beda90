"""Object storage throughput through the gateway (file backend): upload and
download MB/s, and the gateway's CPU seconds per MB moved.

Large objects (``--large-mb`` each) show streaming throughput; small ones
(100 kB) show the per-request cost.  A floor is measured in the same run on
the same file system: writing + fsyncing and reading the same bytes
directly, so the gateway's figures read as a share of what the disk and
page cache allow on this (shared, noisy) machine.  Without ``--host`` a
private stack is started in a temporary directory on free ports (so it
never collides with a running ``./dev stack``) and stopped afterwards.
Run it under the shared lock: ``flock /tmp/apprun-load.lock python bench/storage_bench.py``.
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kpi.target import require_loopback
from stack import stack
from stack.config import StackConfig

MB = 1024 * 1024
SMALL_BYTES = 100 * 1024


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", help="gateway URL (loopback only); default: a private embedded stack")
    parser.add_argument("--large-mb", type=int, default=64, help="size of each large object (default 64)")
    parser.add_argument("--large-count", type=int, default=4, help="large objects (default 4)")
    parser.add_argument("--small-count", type=int, default=300, help="100 kB objects (default 300)")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads for small objects (default 4)")
    args, _unknown = parser.parse_known_args()  # ./dev bench passes the same arguments to every script
    return args


class GatewayCpu:
    """CPU seconds of the gateway: psutil for a local PID, else /metrics."""

    def __init__(self, host: str, pid: int | None) -> None:
        self.host, self.process = host, psutil.Process(pid) if pid else None

    def seconds(self) -> float:
        if self.process is not None:
            times = self.process.cpu_times()
            return times.user + times.system
        text = requests.get(f"{self.host}/metrics", timeout=10).text
        match = re.search(r"^process_cpu_seconds_total (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else float("nan")


def measure(cpu: GatewayCpu, total_bytes: int, action: Callable[[], None]) -> tuple[float, float]:
    """(MB/s, gateway CPU ms per MB) of one action."""
    cpu_before, started = cpu.seconds(), time.perf_counter()
    action()
    elapsed, cpu_used = time.perf_counter() - started, cpu.seconds() - cpu_before
    megabytes = total_bytes / MB
    return megabytes / elapsed, cpu_used * 1000 / megabytes


def disk_floor(directory: Path, payload: bytes, count: int) -> tuple[float, float]:
    """Write+fsync+rename and read back, straight on the file system."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"floor-{index}" for index in range(count)]
    started = time.perf_counter()
    for path in paths:
        partial = path.with_suffix(".part")
        with open(partial, "wb") as handle:
            handle.writelines(payload[offset:offset + 64 * 1024] for offset in range(0, len(payload), 64 * 1024))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    write_s = time.perf_counter() - started
    started = time.perf_counter()
    for path in paths:
        with open(path, "rb") as handle:
            while handle.read(256 * 1024):
                pass
    read_s = time.perf_counter() - started
    for path in paths:
        path.unlink()
    megabytes = len(payload) * count / MB
    return megabytes / write_s, megabytes / read_s


def run(host: str, gateway_pid: int | None, floor_dir: Path | None, args: argparse.Namespace) -> None:
    require_loopback(host)
    password = os.environ.get("APPRUN_SEED_PASSWORD", "apprun-dev-password")
    login = requests.post(f"{host}/auth/login", json={"email": "charlie@test.com", "password": password}, timeout=30)
    login.raise_for_status()
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=args.concurrency))
    session.headers.update(headers)
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    session.post(f"{host}/storage/v1/bucket", json={"id": bucket}, timeout=30).raise_for_status()
    cpu = GatewayCpu(host, gateway_pid)
    large = os.urandom(args.large_mb * MB)
    small = os.urandom(SMALL_BYTES)
    upload_headers = {"Content-Type": "application/octet-stream"}

    def upload(name: str, payload: bytes) -> None:
        session.post(f"{host}/storage/v1/object/{bucket}/{name}", data=payload, headers=upload_headers,
                     timeout=300).raise_for_status()

    def download(name: str, size: int) -> None:
        received = 0
        with session.get(f"{host}/storage/v1/object/{bucket}/{name}", stream=True, timeout=300) as response:
            response.raise_for_status()
            for chunk in response.iter_content(MB):
                received += len(chunk)
        if received != size:
            raise RuntimeError(f"{name}: {received} of {size} bytes")

    def each(fn: Callable[[int], None], count: int, threads: int) -> Callable[[], None]:
        def action() -> None:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(fn, range(count)))
        return action

    try:
        large_total = len(large) * args.large_count
        small_total = SMALL_BYTES * args.small_count
        rows = [
            (f"upload   {args.large_count} x {args.large_mb} MB, 1 client",
             measure(cpu, large_total, each(lambda i: upload(f"large-{i}", large), args.large_count, 1))),
            (f"download {args.large_count} x {args.large_mb} MB, 1 client",
             measure(cpu, large_total, each(lambda i: download(f"large-{i}", len(large)), args.large_count, 1))),
            (f"upload   {args.small_count} x 100 kB, {args.concurrency} clients",
             measure(cpu, small_total, each(lambda i: upload(f"small/{i}", small), args.small_count,
                                            args.concurrency))),
            (f"download {args.small_count} x 100 kB, {args.concurrency} clients",
             measure(cpu, small_total, each(lambda i: download(f"small/{i}", SMALL_BYTES), args.small_count,
                                            args.concurrency))),
        ]
        print(f"object storage through {host} (file backend unless the gateway is configured for S3)")
        print(f"{'':44} {'MB/s':>8} {'gateway CPU ms/MB':>18}")
        for label, (rate, cpu_ms) in rows:
            print(f"{label:44} {rate:8.1f} {cpu_ms:18.1f}")
        small_up, small_down = rows[2][1][0], rows[3][1][0]
        print(f"small objects/s: upload {small_up * MB / SMALL_BYTES:.0f}, "
          f"download {small_down * MB / SMALL_BYTES:.0f}")
        if floor_dir is not None:
            write_floor, read_floor = disk_floor(floor_dir, large, args.large_count)
            print(f"floor on the same file system: write+fsync {write_floor:.1f} MB/s, read {read_floor:.1f} MB/s; "
                  f"large upload = {rows[0][1][0] / write_floor:.0%} of it, "
                  f"large download = {rows[1][1][0] / read_floor:.0%}")
    finally:
        session.post(f"{host}/storage/v1/bucket/{bucket}/empty", json={}, timeout=300)
        session.delete(f"{host}/storage/v1/bucket/{bucket}", json={}, timeout=30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    args = parse_args()
    if args.host:
        run(args.host.rstrip("/"), None, None, args)
        return
    with tempfile.TemporaryDirectory(prefix="apprun-storage-bench-") as state_dir:
        config = StackConfig.from_env({"state_dir": state_dir, "pg_port": _free_port(),
                                       "gateway_port": _free_port(), "temporal_port": _free_port(),
                                       "temporal_ui_port": _free_port(), "start_worker": False})
        state = stack.up(config, log=lambda message: None)
        try:
            run(state.gateway_url, state.processes["gateway"].pid, Path(state_dir) / "floor", args)
        finally:
            stack.down(config, log=lambda message: None)


if __name__ == "__main__":
    main()
