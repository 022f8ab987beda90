"""The workflow worker: ``apprun-worker`` or ``python -m gateway.workflows.worker``.

Reads APPRUN_TEMPORAL_ADDRESS, APPRUN_TEMPORAL_NAMESPACE,
APPRUN_TEMPORAL_TASK_QUEUE, APPRUN_DATABASE_URL and the budget settings.
SIGTERM / SIGINT shut it down gracefully (running activities get time to
finish).

One worker runs the workflows (and the local activity record_outcome) on
the shared task queue; the regular activities run on one queue per tenant,
each polled by a worker sized by the tenant's plan (tenant_workers.py).
"""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from gateway.budgets import plan_budgets
from gateway.settings import Settings
from gateway.workflows.activities import ActivityDatabase, RegistrationActivities
from gateway.workflows.definitions import UserRegistrationWorkflow
from gateway.workflows.tenant_workers import TenantActivityWorkers

# Threads (and database connections) shared by tenants without an activity
# budget (budgets off); with budgets each tenant has its plan's slots.
ACTIVITY_THREADS = 16
LOCAL_ACTIVITY_THREADS = 4
CONNECT_TIMEOUT_S = 30.0
TENANT_REFRESH_S = 10.0
GRACEFUL_SHUTDOWN = timedelta(seconds=10)
log = logging.getLogger("gateway.workflows.worker")


async def connect(address: str, namespace: str, timeout_s: float = CONNECT_TIMEOUT_S) -> Client:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            return await Client.connect(address, namespace=namespace)
        except Exception:  # the server may still be starting
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.5)


def slots_by_plan(settings: Settings):  # type: ignore[no-untyped-def]
    """plan -> activity_slots (None: no budget); unknown plans get the default plan's."""
    plans = plan_budgets(settings)

    def slots(plan: str) -> int | None:
        if not settings.budgets_enabled:
            return None
        value = plans.get(plan, plans[settings.budget_default_plan]).get("activity_slots")
        return None if value is None else int(value)

    return slots


async def run(settings: Settings) -> None:
    if not settings.temporal_address:
        raise SystemExit("APPRUN_TEMPORAL_ADDRESS is not set")
    client = await connect(settings.temporal_address, settings.temporal_namespace)
    db = ActivityDatabase(settings.database_url, ACTIVITY_THREADS)
    activities = RegistrationActivities(db)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    with ThreadPoolExecutor(ACTIVITY_THREADS, thread_name_prefix="activity-shared") as shared, \
            ThreadPoolExecutor(LOCAL_ACTIVITY_THREADS, thread_name_prefix="local-activity") as local:
        tenants = TenantActivityWorkers(client, settings.temporal_task_queue, activities.remote(), db.tenant_plans,
                                        slots_by_plan(settings), shared, ACTIVITY_THREADS, GRACEFUL_SHUTDOWN)
        # No sandbox: it cost ~4 of the worker's ~15 ms CPU per workflow
        # (bench/workflow_bench.py; passing every module through did not
        # help).  What it guards against, non-deterministic workflow code,
        # is kept out by definitions.py holding only deterministic code.
        workflows = Worker(client, task_queue=settings.temporal_task_queue, workflows=[UserRegistrationWorkflow],
                           activities=activities.local(), activity_executor=local, no_remote_activities=True,
                           workflow_runner=UnsandboxedWorkflowRunner(),
                           graceful_shutdown_timeout=GRACEFUL_SHUTDOWN)
        await tenants.refresh()
        try:
            async with workflows:
                log.info("worker ready on task queue %s at %s; tenant activity slots %s",
                         settings.temporal_task_queue, settings.temporal_address, dict(tenants.slots))
                await tenants.run(stop, TENANT_REFRESH_S)
                log.info("shutting down")
        finally:
            await tenants.shutdown()
    db.close()


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run(Settings.from_env()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
