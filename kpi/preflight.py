"""A short pre-flight against the target, before the load starts:

* WASM cold start and hot execution: deploy the example JSON handler under
  a fresh name and invoke it; the gateway's X-Function-* headers give the
  server-side figures, the client's timing gives the HTTP round trip
  (``wasm_invoke_ms``).
* Auth checks per second: embedded, the gateway's own JWT verification
  and Casbin decision measured in process (no cache, so each check is a
  real signature check plus a real enforce); remote, authenticated
  ``/auth/me`` requests per second over concurrent connections.
"""
from __future__ import annotations

import json
import logging
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from wasm.build import example_wasm
from wasm.samples import PRICE_INPUT

log = logging.getLogger("apprun.kpi")

HOT_CALLS = 200
FLOOR_SECONDS = 3.0          # the machine's floor (kpi/floor.py), measured in every pre-flight
AUTH_SECONDS = 2.0
AUTH_CONCURRENCY = 16


def wasm_figures(host: str, admin_token: str) -> dict[str, list[float]]:
    """Deploy the JSON example under a fresh name and invoke it HOT_CALLS + 1
    times.  The seed's units: ``wasm_hot_us`` is the function itself as the
    server measured it (``X-Function-Duration-Us``, like the seed's in-process
    benchmark) and ``wasm_cold_start_ms`` the server's compile-and-load time
    (``X-Function-Cold-Start-Ms``); ``wasm_invoke_ms`` keeps the HTTP round
    trip of each hot call, as the client saw it.  A gateway that does not
    send the headers gives the two server figures no samples (a failed
    check), never a client timing under the server's name."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    name = f"preflight-{uuid.uuid4().hex[:8]}"
    deployed = requests.put(f"{host}/functions/{name}", data=example_wasm("price_tax"), timeout=30,
                            headers={**headers, "Content-Type": "application/wasm"})
    deployed.raise_for_status()
    cold: list[float] = []
    hot: list[float] = []
    invoke: list[float] = []
    try:
        for i in range(HOT_CALLS + 1):
            started = time.perf_counter()
            response = requests.post(f"{host}/functions/{name}/invoke", json=PRICE_INPUT, headers=headers, timeout=10)
            elapsed_ms = (time.perf_counter() - started) * 1000
            response.raise_for_status()
            if i == 0:
                if "X-Function-Cold-Start-Ms" in response.headers:
                    cold.append(float(response.headers["X-Function-Cold-Start-Ms"]))
                continue
            invoke.append(elapsed_ms)
            if "X-Function-Duration-Us" in response.headers:
                hot.append(float(response.headers["X-Function-Duration-Us"]))
    finally:
        requests.delete(f"{host}/functions/{name}", headers=headers, timeout=10)
    return {"wasm_cold_start_ms": cold, "wasm_hot_us": hot, "wasm_invoke_ms": invoke}


def auth_checks_in_process(settings: dict[str, Any], token: str) -> float:
    from gateway.auth.tokens import TokenService
    from gateway.rbac.enforcer import Authorizer, default_policy_files
    from gateway.settings import Settings

    tokens = TokenService(Settings.from_mapping(settings))
    authorizer = Authorizer(*default_policy_files())
    checks = 0
    deadline = time.perf_counter() + AUTH_SECONDS
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        for _ in range(100):
            claims = tokens._decode(token)  # noqa: SLF001 - uncached on purpose
            authorizer.enforce_uncached(claims["role"], claims["tenant_id"], "/data/products", "GET")
        checks += 100
    return checks / (time.perf_counter() - started)


def auth_checks_over_http(host: str, token: str) -> float:
    """Authenticated ``/auth/me`` requests per second from AUTH_CONCURRENCY
    keep-alive connections (a lower bound: each check also pays for HTTP).
    One connection measured latency, not throughput: 655/s against the
    local gateway, where 16 connections measure the gateway's capacity."""
    from gevent.pool import Pool
    from geventhttpclient import HTTPClient
    from geventhttpclient.url import URL

    url = URL(f"{host.rstrip('/')}/auth/me")
    client = HTTPClient.from_url(url, concurrency=AUTH_CONCURRENCY, connection_timeout=5, network_timeout=5)
    headers = {"Authorization": f"Bearer {token}"}
    counted = [0]
    deadline = time.perf_counter() + AUTH_SECONDS

    def check_until_deadline() -> None:
        while time.perf_counter() < deadline:
            response = client.get(url.request_uri, headers=headers)
            response.read()
            if response.status_code != 200:
                raise RuntimeError(f"/auth/me answered {response.status_code}")
            counted[0] += 1

    started = time.perf_counter()
    pool = Pool(AUTH_CONCURRENCY)
    try:
        for _ in range(AUTH_CONCURRENCY):
            pool.spawn(check_until_deadline)
        pool.join(raise_error=True)
    finally:
        client.close()
    return counted[0] / (time.perf_counter() - started)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def login(host: str, email: str, password: str) -> str:
    """An access token for the pre-flight's user (``--kpi-user``)."""
    response = requests.post(f"{host}/auth/login", json={"email": email, "password": password}, timeout=30)
    if response.status_code != 200:
        raise RuntimeError(f"pre-flight login as {email} answered HTTP {response.status_code}")
    return response.json()["access_token"]


def measure(host: str, email: str, password: str, secrets_file: Path | None) -> dict[str, Any]:
    """Every pre-flight figure; ``secrets_file`` is the embedded stack's (auth
    is then measured in process), None for a --host target (over HTTP).  A
    failure is reported under "error" (its KPIs then have no samples, a
    failed check), never as a pass."""
    figures: dict[str, Any] = {}
    try:
        token = login(host, email, password)
        figures.update(wasm_figures(host, token))
        if secrets_file is not None:
            secrets = json.loads(secrets_file.read_text())
            figures["auth_checks_per_s"] = auth_checks_in_process(
                {"jwt_secret": os.environ.get("APPRUN_JWT_SECRET") or secrets["jwt_secret"]}, token)
            figures["auth_method"] = "in process (JWT verify + Casbin enforce, uncached)"
        else:
            figures["auth_checks_per_s"] = auth_checks_over_http(host, token)
            figures["auth_method"] = f"HTTP /auth/me over {AUTH_CONCURRENCY} connections"
    except Exception as exc:  # noqa: BLE001 - reported as missing samples, never as a pass
        log.error("pre-flight failed: %s", exc)
        figures["error"] = str(exc)
    figures["floor"] = machine_floor()
    cold, hot = figures.get("wasm_cold_start_ms") or [None], median(figures.get("wasm_hot_us", []))
    invoke = median(figures.get("wasm_invoke_ms", []))
    log.info("pre-flight: auth %.0f checks/s (%s), wasm cold start %s ms, hot median %s us on the server, "
             "%s ms over HTTP", figures.get("auth_checks_per_s", 0), figures.get("auth_method", "not measured"),
             "n/a" if cold[0] is None else f"{cold[0]:.2f}", "n/a" if hot is None else f"{hot:.0f}",
             "n/a" if invoke is None else f"{invoke:.2f}")
    return figures


def machine_floor(seconds: float = FLOOR_SECONDS) -> dict[str, Any]:
    """This machine's floor today (kpi/floor.py's ``measure_floor``): CPU per
    request and req/s of a Flask hello served like the gateway.  The run's
    figures are read against it; the machine's speed moves ~2x by the day."""
    try:
        from kpi.floor import measure_floor
    except ImportError:
        return {"error": "kpi/floor.py is not installed"}
    try:
        floor = measure_floor(seconds)
    except Exception as exc:  # noqa: BLE001 - the report says the floor is missing, the run goes on
        log.warning("floor not measured: %s", exc)
        return {"error": str(exc)}
    log.info("pre-flight: %s", floor.describe())
    return {"cpu_ms_per_request": floor.cpu_ms_per_request, "requests_per_s": floor.requests_per_s,
            "description": floor.describe()}
