"""Names and dataclasses shared by the gateway, the workflow and the worker
(one dataclass argument per activity, as temporalio recommends)."""
from __future__ import annotations

from dataclasses import dataclass, field

TASK_QUEUE = "apprun-workflows"
USER_REGISTRATION = "user_registration"
#: Public workflow names (the route's "workflow" field) -> Temporal type names.
WORKFLOW_TYPES = {USER_REGISTRATION: "UserRegistrationWorkflow"}
MAX_INJECTED_FAILURES = 10
MAX_PROJECT_DELAY_MS = 60_000


def activity_task_queue(workflow_task_queue: str, tenant_id: str) -> str:
    """Each tenant's activities run on a task queue of their own, polled by
    a worker sized by the tenant's plan (gateway/workflows/tenant_workers.py):
    one tenant's backlog waits in Temporal without holding another's slots."""
    return f"{workflow_task_queue}.tenant.{tenant_id}"


@dataclass
class RegistrationInput:
    tenant_id: str
    email: str
    # Failure injection, to demonstrate retries: the welcome-email activity
    # fails its first N attempts; the project activity waits this long.
    fail_email_attempts: int = 0
    project_delay_ms: int = 0


@dataclass
class EmailInput:
    tenant_id: str
    workflow_id: str
    email: str
    fail_first_attempts: int = 0


@dataclass
class ProjectInput:
    tenant_id: str
    workflow_id: str
    email: str
    delay_ms: int = 0


@dataclass
class OutcomeInput:
    tenant_id: str
    workflow_id: str
    status: str
    attempts: int
    result: dict = field(default_factory=dict)
    error: str = ""


@dataclass
class RegistrationResult:
    email: str
    outbox_id: str
    project_id: str
    attempts: dict = field(default_factory=dict)
