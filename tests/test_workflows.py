"""Workflows on the real Temporal dev server and worker started by the stack."""
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import psycopg2
import pytest
import requests
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client

from stack import stack as stack_module
from stack.processes import spawn, stop
from tests.conftest import auth, login

POLL_S = 0.2


def start(gateway_url: str, token: str, **extra) -> dict:
    email = f"wf-{uuid.uuid4().hex[:8]}@test.com"
    response = requests.post(f"{gateway_url}/api/v1/workflows/execute", headers=auth(token), timeout=15,
                             json={"workflow": "user_registration", "input": {"email": email, **extra}})
    assert response.status_code == 202, response.text
    return {**response.json(), "email": email}


def wait_done(gateway_url: str, token: str, workflow_id: str, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = requests.get(f"{gateway_url}/api/v1/workflows/{workflow_id}", headers=auth(token), timeout=5).json()
        if body["status"] != "running":
            return body
        time.sleep(POLL_S)
    raise AssertionError(f"workflow {workflow_id} still running after {timeout_s} s")


def poll_until(condition: Callable[[], bool], timeout_s: float, what: str,
               describe: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s} s: {what}{describe()}")
        time.sleep(POLL_S)


def activity_states(temporal_address: str, workflow_ids: list[str], activity: str | None = None) -> list[str]:
    """The states (SCHEDULED, STARTED, ...) of the pending activities of the
    workflows (only ``activity``'s when given), as Temporal reports them."""

    async def describe() -> list[str]:
        client = await Client.connect(temporal_address)
        states = []
        for workflow_id in workflow_ids:
            description = await client.get_workflow_handle(workflow_id).describe()
            states += [PendingActivityState.Name(pending.state).removeprefix("PENDING_ACTIVITY_STATE_")
                       for pending in description.raw_description.pending_activities
                       if activity in (None, pending.activity_type.name)]
        return states

    return asyncio.run(describe())


def count_rows(running_stack, table: str, workflow_id: str) -> int:
    config, _ = running_stack
    import json
    password = json.loads((config.state_dir / "secrets.json").read_text())["pg_superuser_password"]
    conn = psycopg2.connect(f"postgresql://postgres:{password}@127.0.0.1:{config.pg_port}/apprun")
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {table} WHERE workflow_id = %s", (workflow_id,))
            return cur.fetchone()[0]
    finally:
        conn.close()


@pytest.fixture(scope="module")
def alice(gateway_url) -> str:
    return login(gateway_url, "alice@test.com")


def test_completes_and_writes_rows_once(gateway_url, alice, running_stack) -> None:
    started = start(gateway_url, alice)
    done = wait_done(gateway_url, alice, started["workflow_id"])
    assert done["status"] == "completed" and done["attempts"] == 2
    assert done["result"]["attempts"] == {"send_welcome_email": 1, "create_default_project": 1}
    assert count_rows(running_stack, "email_outbox", started["workflow_id"]) == 1
    assert count_rows(running_stack, "projects", started["workflow_id"]) == 1


def test_retries_are_automatic_and_visible(gateway_url, alice, running_stack) -> None:
    started = start(gateway_url, alice, fail_email_attempts=2)
    done = wait_done(gateway_url, alice, started["workflow_id"])
    assert done["status"] == "completed"
    assert done["result"]["attempts"]["send_welcome_email"] == 3
    assert count_rows(running_stack, "email_outbox", started["workflow_id"]) == 1


def test_exhausted_retries_fail_the_workflow(gateway_url, alice) -> None:
    started = start(gateway_url, alice, fail_email_attempts=6)
    done = wait_done(gateway_url, alice, started["workflow_id"])
    assert done["status"] == "failed" and "injected failure" in (done["error"] or "")


def test_ids_are_tenant_scoped_and_roles_apply(gateway_url, alice) -> None:
    started = start(gateway_url, alice)
    charlie = login(gateway_url, "charlie@test.com")
    bob = login(gateway_url, "bob@test.com")
    url = f"{gateway_url}/api/v1/workflows/{started['workflow_id']}"
    assert requests.get(url, headers=auth(charlie)).status_code == 404
    assert requests.get(url, headers=auth(bob)).status_code == 200
    listed = requests.get(f"{gateway_url}/api/v1/workflows?limit=100", headers=auth(charlie)).json()
    assert started["workflow_id"] not in {w["workflow_id"] for w in listed}
    forbidden = requests.post(f"{gateway_url}/api/v1/workflows/execute", headers=auth(bob),
                              json={"workflow": "user_registration", "input": {"email": "b@test.com"}})
    assert forbidden.status_code == 403


@pytest.mark.parametrize("body", [
    {"workflow": "nope", "input": {"email": "a@b.co"}},
    {"workflow": {}, "input": {"email": "a@b.co"}},        # a fuzz finding: was a 500 (unhashable name)
    {"workflow": ["user_registration"], "input": {"email": "a@b.co"}},
    {"workflow": "user_registration"},
    {"workflow": "user_registration", "input": {"email": "not-an-email"}},
    {"workflow": "user_registration", "input": {"email": "a@b.co", "fail_email_attempts": -1}},
    {"workflow": "user_registration", "input": {"email": "a@b.co", "extra": 1}},
])
def test_bad_input_is_400(gateway_url, alice, body) -> None:
    response = requests.post(f"{gateway_url}/api/v1/workflows/execute", headers=auth(alice), json=body)
    assert response.status_code == 400 and set(response.json()) == {"code", "message", "details", "hint"}


@pytest.mark.slow
def test_survives_worker_crash(gateway_url, alice, running_stack) -> None:
    """Kill the worker during a slow activity; a new worker finishes the run."""
    config, state = running_stack
    started = start(gateway_url, alice, project_delay_ms=4000)
    poll_until(lambda: activity_states(state.temporal_address, [started["workflow_id"]], "create_default_project")
               == ["STARTED"], 30, "the project activity runs on the worker")
    worker = state.processes["worker"]
    worker.stop_signal = 9  # a crash, not a graceful stop
    assert stop(worker) == "stopped"
    env = stack_module.service_env(config, state, stack_module.load_secrets(config))
    replacement = spawn("worker", [__import__("sys").executable, "-m", "gateway.workflows.worker"],
                        config.logs_dir / "worker-replacement.log", env=env)
    state.processes["worker"] = replacement
    state.save(config.state_file)
    done = wait_done(gateway_url, alice, started["workflow_id"], timeout_s=90)
    assert done["status"] == "completed"
    assert done["result"]["attempts"]["create_default_project"] >= 2
    assert count_rows(running_stack, "projects", started["workflow_id"]) == 1
