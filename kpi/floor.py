"""The machine's floor: CPU per request and req/s of a Flask hello served
exactly like the gateway (gateway/server.py's ``serve``: gevent pywsgi,
TCP_NODELAY, no access log), measured in the same run as the figures it
puts in perspective.  This machine's speed moves by about 2x from day to
day, so the stack's figures are stated as ratios to this floor.

Also the closed-loop load driver the floor and ``bench/cost.py`` share: a
separate process (so its own CPU is never counted) running keep-alive
connections with geventhttpclient, while the measuring process reads the
server's process-tree CPU time (kpi/process_cpu.py, per thread to the
nanosecond) before and after the window.

``python -m kpi.floor`` prints the floor; ``python -m kpi.floor serve PORT``
and ``python -m kpi.floor drive SPEC_JSON`` are the two helper processes.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import types
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from kpi.process_cpu import cpu_difference, cpu_snapshot

DEFAULT_CONNECTIONS = 8  # the wrk runs used 8 connections
WARMUP_S = 0.5
READY_TIMEOUT_S = 20.0
HELLO_BODY = "Hello, World!"
# Replaced in a request body by a value unique to the request (inserts and
# workflow starts need distinct names/e-mails).
UNIQUE_MARKER = "{unique}"


@dataclass(frozen=True)
class FloorFigures:
    cpu_ms_per_request: float
    requests_per_s: float

    def describe(self) -> str:
        """The report's wording: ``floor: Flask hello 0.41 ms CPU, 2,330 req/s``."""
        return f"floor: Flask hello {self.cpu_ms_per_request:.2f} ms CPU, {self.requests_per_s:,.0f} req/s"


@dataclass(frozen=True)
class RequestSpec:
    """One request the driver repeats; ``body`` may contain UNIQUE_MARKER."""
    path: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str = ""


@dataclass(frozen=True)
class Measurement:
    requests: int
    errors: int
    seconds: float
    cpu_s: dict[str, float]  # CPU seconds per measured component in the window
    first_error: str = ""

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def cpu_ms_per_request(self, component: str) -> float:
        return self.cpu_s.get(component, 0.0) * 1000 / max(1, self.requests)


# -- the driver ----------------------------------------------------------------

def measure(base_url: str, spec: RequestSpec, components: Mapping[str, Iterable[int]], seconds: float,
            connections: int = DEFAULT_CONNECTIONS, count: int | None = None) -> Measurement:
    """Drive ``spec`` against ``base_url`` for ``seconds`` (or ``count``
    requests) from a driver process, and return what the components'
    process trees spent in CPU during the driven window."""
    job = {"url": base_url, "spec": asdict(spec), "seconds": seconds, "connections": connections,
           "count": count}
    components = {name: list(pids) for name, pids in components.items()}
    with subprocess.Popen([sys.executable, "-m", "kpi.floor", "drive", json.dumps(job)],
                          stdout=subprocess.PIPE, text=True, env=_child_env(), cwd=_ROOT) as driver:
        assert driver.stdout is not None
        line = driver.stdout.readline()
        if line.strip() != "start":
            driver.kill()
            raise RuntimeError(f"load driver did not start: {line.strip() or 'no output'}")
        before = cpu_snapshot(components)
        result_line = driver.stdout.readline()
        after = cpu_snapshot(components)
        driver.wait(timeout=30)
    if not result_line:
        raise RuntimeError(f"load driver ended without a result (exit {driver.returncode})")
    result = json.loads(result_line)
    return Measurement(result["requests"], result["errors"], result["seconds"], cpu_difference(before, after),
                       result.get("first_error", ""))


def _drive(job: dict[str, Any]) -> None:
    """The driver process: warm up, say ``start``, run the window, print the
    result as one JSON line.  Non-2xx answers count as errors."""
    import gevent
    from geventhttpclient import HTTPClient
    from geventhttpclient.url import URL

    url = URL(job["url"])
    spec = RequestSpec(**job["spec"])
    connections: int = job["connections"]
    count_limit: int | None = job["count"]
    client = HTTPClient(url.host, url.port, concurrency=connections, connection_timeout=10, network_timeout=60)
    counted = {"requests": 0, "errors": 0, "started": 0}
    first_error: list[str] = []
    phase = {"measuring": False, "stop_at": time.perf_counter() + WARMUP_S}
    prefix = uuid.uuid4().hex[:8]

    def one() -> None:
        n = counted["started"]
        counted["started"] += 1
        body = spec.body.replace(UNIQUE_MARKER, f"{prefix}-{n}") if spec.body else None
        response = client.request(spec.method, spec.path, body=body, headers=dict(spec.headers))
        payload = response.read()
        if not phase["measuring"]:
            return
        counted["requests"] += 1
        if not 200 <= response.status_code < 300:
            counted["errors"] += 1
            if not first_error:
                first_error.append(f"{response.status_code} {payload[:200]!r}")

    def loop() -> None:
        while time.perf_counter() < phase["stop_at"]:
            if phase["measuring"] and count_limit is not None and counted["started"] >= count_limit:
                return
            one()

    if count_limit is None:  # warm-up: connections open, code paths hot
        gevent.joinall([gevent.spawn(loop) for _ in range(connections)], raise_error=True)
    counted["started"] = 0
    phase.update(measuring=True, stop_at=time.perf_counter() + job["seconds"])
    print("start", flush=True)
    started = time.perf_counter()
    gevent.joinall([gevent.spawn(loop) for _ in range(connections)], raise_error=True)
    elapsed = time.perf_counter() - started
    client.close()
    print(json.dumps({"requests": counted["requests"], "errors": counted["errors"], "seconds": elapsed,
                      "first_error": first_error[0] if first_error else ""}), flush=True)


# -- the floor -----------------------------------------------------------------

def _hello_app_factory() -> Any:
    from flask import Flask

    from gateway.settings import Settings

    app = Flask("floor")
    # The gateway's HTTP handler reads its limits and timeouts from here:
    # the floor is served with the same ones.
    app.config["APPRUN_SETTINGS"] = Settings.from_env()

    @app.get("/")
    def hello() -> str:
        return HELLO_BODY

    return app


def _serve_hello(port: int) -> int:
    """Serve the hello app through gateway/server.py's own ``serve`` (same
    listener, TCP_NODELAY server class, handler, monkey patching), by handing
    it a ``gateway.app`` whose factory builds the hello app."""
    from gateway import server

    stand_in = types.ModuleType("gateway.app")
    stand_in.create_app = _hello_app_factory  # type: ignore[attr-defined]
    sys.modules["gateway.app"] = stand_in
    return server.serve(server.parse_args(["--host", "127.0.0.1", "--port", str(port)]))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child_env() -> dict[str, str]:
    """The children import this checkout (``kpi``, ``gateway``) first; they
    also start in it (``python -m`` puts the working directory first)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH", "")) if p)
    return env


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"floor server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("floor server did not listen in time")


def measure_floor(seconds: float = 3.0, connections: int = DEFAULT_CONNECTIONS) -> FloorFigures:
    """CPU per request (ms) and req/s of the Flask hello served like the
    gateway, over ``seconds`` of closed-loop load after a short warm-up."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "kpi.floor", "serve", str(port)], env=_child_env(),
                              cwd=_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(port, server)
        result = measure(f"http://127.0.0.1:{port}", RequestSpec("/"), {"floor": [server.pid]}, seconds,
                         connections)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if result.requests == 0 or result.errors:
        raise RuntimeError(f"floor run failed: {result.requests} requests, {result.errors} errors "
                           f"{result.first_error}")
    return FloorFigures(round(result.cpu_ms_per_request("floor"), 4), round(result.requests_per_s, 1))


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        return _serve_hello(int(argv[1]))
    if argv[:1] == ["drive"]:
        _drive(json.loads(argv[1]))
        return 0
    seconds = float(argv[0]) if argv else 3.0
    print(measure_floor(seconds).describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
