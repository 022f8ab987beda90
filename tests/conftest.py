"""Shared fixtures: one real stack (PostgreSQL, Temporal dev server, worker,
gateway) per test session, in a private state directory on free ports."""
from __future__ import annotations

import json
import random
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from stack import stack
from stack.config import StackConfig

SEED_PASSWORD = "apprun-test-password"
SHARED_GATEWAY_ADDRESS_FREE_FAILURES = 1_000_000
SHARED_GATEWAY_BUDGETS = {plan: {"auth_rps": None, "auth_burst": None} for plan in ("free", "pro")}
TENANT_1 = "11111111-1111-1111-1111-111111111111"
TENANT_2 = "22222222-2222-2222-2222-222222222222"
#: Settings for the extra in-process apps of tests that invoke no function.
#: Every app builds a wasmtime engine and keeps it for the whole session;
#: with the pooling allocator one process holds at most ~32 of them (the
#: 33rd aborts the process: "failed to protect stack guard page"), which the
#: suite's apps reached.  The on-demand allocator has no such limit.
NO_FUNCTION_POOLING = {"function_pooling": False}


#: Ports free_port has handed out in this session: never twice.
_HANDED_OUT: set[int] = set()
#: Where free_port looks, below the kernel's ephemeral range.
LOWEST_TEST_PORT = 10000


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range.  A port the
    kernel hands out for bind(0) comes from that range, and so does the local
    port of every outgoing connection: between this call and the service's
    own bind, PostgreSQL, Temporal or the worker could connect from it, and
    the stack then refused it as in use (a CI run, 2026-11-25).  Below the
    range no outgoing connection takes it."""
    low = _ephemeral_low()
    candidates = random.Random()
    for _ in range(1000):
        port = candidates.randrange(LOWEST_TEST_PORT, max(low, LOWEST_TEST_PORT + 1))
        if port in _HANDED_OUT or port >= low:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:     # in use (or in TIME_WAIT)
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket() as sock:     # no room below the range: the kernel's choice
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stack_config(state_dir: Path, **overrides: Any) -> StackConfig:
    values = {
        "state_dir": state_dir,
        "pg_port": free_port(),
        "gateway_port": free_port(),
        "temporal_port": free_port(),
        "temporal_ui_port": free_port(),
        "seed_password": SEED_PASSWORD,
    }
    values.update(overrides)
    return StackConfig.from_env(values, environ={})


@pytest.fixture(scope="session")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StackConfig, stack.StackState]]:
    config = stack_config(tmp_path_factory.mktemp("stack") / "state")
    # Many tests send wrong passwords to this shared gateway from 127.0.0.1
    # on purpose; its per-address login throttle would then refuse the load
    # tests' honest logins from the same address.  The throttle is tested on
    # gateways of its own (tests/test_login_throttle.py), so this one counts
    # failures per account only.  The variable reaches only the processes
    # stack.up starts.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("APPRUN_LOGIN_ADDRESS_FREE_FAILURES", str(SHARED_GATEWAY_ADDRESS_FREE_FAILURES))
        # The load tests' remote pre-flight measures the gateway's auth
        # capacity over 16 connections (thousands of /auth/me a second as
        # alice), which the free plan's auth budget would cap at 200/s.
        # Budgets are tested on apps of their own (tests/test_budgets.py).
        patch.setenv("APPRUN_BUDGET_PLANS", json.dumps(SHARED_GATEWAY_BUDGETS))
        state = stack.up(config, log=lambda message: None)
    try:
        yield config, state
    finally:
        stack.down(config, log=lambda message: None)


@pytest.fixture(scope="session")
def stack_secrets(running_stack) -> dict[str, str]:
    config, _ = running_stack
    return json.loads((config.state_dir / "secrets.json").read_text())


@pytest.fixture(scope="session")
def gateway_url(running_stack) -> str:
    return running_stack[1].gateway_url


@pytest.fixture(scope="session")
def app_config(running_stack, stack_secrets, tmp_path_factory) -> dict[str, Any]:
    """Settings for an in-process app against the session's database."""
    _, state = running_stack
    return {
        "database_url": state.database_url,
        "jwt_secret": stack_secrets["jwt_secret"],
        "temporal_address": state.temporal_address,
        "function_cache_dir": str(tmp_path_factory.mktemp("wasm-cache")),
    }


@pytest.fixture(scope="session")
def app(app_config):
    from gateway.app import create_app

    return create_app(app_config)


@pytest.fixture()
def client(app):
    return app.test_client()


def login(client_or_url: Any, email: str, password: str = SEED_PASSWORD) -> str:
    body = {"email": email, "password": password}
    if isinstance(client_or_url, str):
        response = requests.post(client_or_url + "/auth/login", json=body, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["access_token"]
    response = client_or_url.post("/auth/login", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["access_token"]


@pytest.fixture(scope="session")
def tokens(app) -> dict[str, str]:
    client = app.test_client()
    return {name: login(client, f"{name}@test.com") for name in ("alice", "bob", "charlie")}


def auth(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


#: A tenant's WASM time budget is per gateway process and outlives a test:
#: a test whose calls ran for seconds leaves its tenant in debt (429
#: function_time_budget) for the next test on the shared gateway.
SETTLE_FUNCTION = "time-settle-probe"
SETTLE_DEADLINE_S = 30.0


def settle_wasm_time(gateway_url: str, token: str) -> None:
    """Return once the token's tenant may run a function again on the shared
    gateway: poll a cheap call, waiting out each 429's Retry-After."""
    import time

    from wasm.build import example_wasm

    deadline = time.monotonic() + SETTLE_DEADLINE_S
    url = f"{gateway_url}/functions/{SETTLE_FUNCTION}"
    while True:
        response = requests.post(url + "/invoke", json={"export": "add", "args": [1, 2]}, headers=auth(token),
                                 timeout=30)
        if response.status_code == 404:
            response = requests.put(url, data=example_wasm("add"), timeout=30,
                                    headers=auth(token, **{"Content-Type": "application/wasm"}))
            if response.status_code in (200, 201):
                continue
        if response.status_code == 200:
            return
        assert response.status_code == 429 and time.monotonic() < deadline, response.text
        time.sleep(min(float(response.headers.get("Retry-After", "1")), 1.0))


@pytest.fixture()
def wasm_time_settled(request: pytest.FixtureRequest) -> None:
    """Before a test that calls functions on the shared gateway, the seed
    tenants are out of WASM time debt left by an earlier test (any order)."""
    if "gateway_url" not in request.fixturenames:
        return
    gateway_url = request.getfixturevalue("gateway_url")
    tokens = request.getfixturevalue("tokens")
    for admin in ("alice", "charlie"):   # one admin per seed tenant (deploy needs admin)
        settle_wasm_time(gateway_url, tokens[admin])
