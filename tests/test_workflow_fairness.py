"""One tenant's slow workflows do not delay another tenant's (issue 13):
each tenant's activities run on its own task queue with its plan's slots."""
from __future__ import annotations

import pytest
import requests

from gateway.budgets import DEFAULT_PLAN_BUDGETS
from tests.conftest import auth, login
from tests.test_workflows import (
    activity_states,
    count_rows,
    poll_until,
    start,
    wait_done,
)

SLOW_MS = 8000
PRO_SLOTS = int(DEFAULT_PLAN_BUDGETS["pro"]["activity_slots"])  # charlie's tenant is on pro


def statuses(gateway_url: str, token: str, workflow_ids: list[str]) -> list[str]:
    return [requests.get(f"{gateway_url}/api/v1/workflows/{workflow_id}", headers=auth(token), timeout=10)
            .json()["status"] for workflow_id in workflow_ids]


@pytest.mark.slow
def test_slow_tenant_keeps_its_excess_queued_and_others_run(gateway_url, running_stack) -> None:
    _, state = running_stack
    alice, charlie = login(gateway_url, "alice@test.com"), login(gateway_url, "charlie@test.com")
    slow = [start(gateway_url, charlie, project_delay_ms=SLOW_MS)["workflow_id"] for _ in range(2 * PRO_SLOTS + 1)]

    def charlie_pending() -> list[str]:
        return activity_states(state.temporal_address, slow)

    # Charlie's slow steps occupy (at least) his share of the worker, and every
    # one of his workflows has an activity pending: a workflow between two
    # activities (or whose first task has not run yet) has none for a moment,
    # and a CI run read 15 of 17 (2026-11-25).
    def settled() -> bool:
        return (len(charlie_pending()) == len(slow) and activity_states(
            state.temporal_address, slow, "create_default_project").count("STARTED") >= PRO_SLOTS)

    poll_until(settled, 60, f"{PRO_SLOTS} of charlie's slow steps run and each workflow has an activity pending",
               lambda: f" (pending: {charlie_pending()})")
    pending_before = sorted(charlie_pending())

    quick = start(gateway_url, alice)
    done = wait_done(gateway_url, alice, quick["workflow_id"], timeout_s=60)
    assert done["status"] == "completed"
    # Alice finished while charlie's first slow steps were still running.
    assert statuses(gateway_url, charlie, slow).count("completed") == 0
    # Exactly his share ran; the rest of his activities waited in Temporal, on his own queue.
    assert pending_before == ["SCHEDULED"] * (len(slow) - PRO_SLOTS) + ["STARTED"] * PRO_SLOTS

    # Charlie's queued excess is not lost: it runs as his slots free up.
    poll_until(lambda: statuses(gateway_url, charlie, slow).count("completed") == len(slow), 120,
               "all of charlie's workflows complete")
    assert all(count_rows(running_stack, "projects", workflow_id) == 1 for workflow_id in slow)


def test_activity_slots_follow_the_plan_and_budgets_off_share_the_pool() -> None:
    from gateway.settings import Settings
    from gateway.workflows.worker import slots_by_plan

    slots = slots_by_plan(Settings.from_mapping({"budget_plans": {"pro": {"activity_slots": 3}}}))
    assert (slots("free"), slots("pro"), slots("enterprise")) == (4, 3, 4)
    assert slots_by_plan(Settings.from_mapping({"budgets_enabled": False}))("pro") is None
