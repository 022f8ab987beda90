"""Workflow definitions (deterministic code only: no I/O here)."""
from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from gateway.workflows.shared import (
        EmailInput,
        OutcomeInput,
        ProjectInput,
        RegistrationInput,
        RegistrationResult,
        activity_task_queue,
    )

#: Retries are automatic: up to five attempts, 200 ms growing to 2 s apart.
ACTIVITY_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), backoff_coefficient=2.0,
                             maximum_interval=timedelta(seconds=2), maximum_attempts=5)
ACTIVITY_TIMEOUT = timedelta(seconds=90)
# A worker that dies mid-activity is noticed within this time and the
# activity is retried on another (or the restarted) worker.
HEARTBEAT_TIMEOUT = timedelta(seconds=3)
RECORD_TIMEOUT = timedelta(seconds=30)


@workflow.defn(name="UserRegistrationWorkflow")
class UserRegistrationWorkflow:
    @workflow.run
    async def run(self, data: RegistrationInput) -> RegistrationResult:
        workflow_id = workflow.info().workflow_id
        attempts: dict[str, int] = {}
        try:
            # Short database writes run as local activities: no activity task,
            # no task-queue round trip and three history events fewer each,
            # which is most of the dev server's CPU per workflow (bench/).
            # Temporal still records their results and retries them.
            email = await workflow.execute_local_activity(
                "send_welcome_email",
                EmailInput(data.tenant_id, workflow_id, data.email, data.fail_email_attempts),
                start_to_close_timeout=ACTIVITY_TIMEOUT, retry_policy=ACTIVITY_RETRY, result_type=dict,
            )
            attempts["send_welcome_email"] = email["attempt"]
            project_input = ProjectInput(data.tenant_id, workflow_id, data.email, data.project_delay_ms)
            if data.project_delay_ms:
                # A slow step runs on the tenant's own queue (its plan's share
                # of the worker) and heartbeats, so a dead worker is noticed.
                project = await workflow.execute_activity(
                    "create_default_project", project_input,
                    task_queue=activity_task_queue(workflow.info().task_queue, data.tenant_id),
                    start_to_close_timeout=ACTIVITY_TIMEOUT, heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=ACTIVITY_RETRY, result_type=dict,
                )
            else:
                project = await workflow.execute_local_activity(
                    "create_default_project", project_input,
                    start_to_close_timeout=ACTIVITY_TIMEOUT, retry_policy=ACTIVITY_RETRY, result_type=dict,
                )
            attempts["create_default_project"] = project["attempt"]
        except (ActivityError, ApplicationError) as error:
            # A regular activity's failure arrives as ActivityError wrapping
            # the cause; a local activity's as the ApplicationError itself.
            cause = error.cause if isinstance(error, ActivityError) else error
            message = str(cause or error)
            await self._record(data, workflow_id, "failed", attempts, {}, message)
            raise
        result = RegistrationResult(data.email, email["id"], project["id"], attempts)
        await self._record(data, workflow_id, "completed", attempts,
                           {"email": data.email, "outbox_id": email["id"], "project_id": project["id"],
                            "attempts": attempts}, "")
        return result

    async def _record(self, data: RegistrationInput, workflow_id: str, status: str, attempts: dict[str, int],
                      result: dict, error: str) -> None:
        # A local activity: a short idempotent write that needs no task queue
        # round trip of its own (cheaper on the dev server than a third
        # regular activity); Temporal still records its result and retries it.
        await workflow.execute_local_activity(
            "record_outcome",
            OutcomeInput(data.tenant_id, workflow_id, status, sum(attempts.values()), result, error),
            start_to_close_timeout=RECORD_TIMEOUT, retry_policy=RetryPolicy(maximum_attempts=10),
        )
