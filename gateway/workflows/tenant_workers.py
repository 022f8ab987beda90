"""One activity worker per tenant, each on the tenant's own task queue and
running at most the plan's ``activity_slots`` activities at once.

Why per-tenant queues: with one shared queue the worker's threads are first
come, first served, so 17 slow activities of one tenant kept another
tenant's registration waiting ~7 s (issue 13).  Here a tenant's excess waits
in Temporal, on its own queue, and cannot take another tenant's slots;
retries go back to the same queue, so they keep working.

The tenants and their plans are read every ``refresh_s`` seconds; a new
tenant's activities wait at most that long for their worker, and a plan
change restarts that tenant's worker with the new size.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import PollerBehaviorSimpleMaximum, Worker

from gateway.workflows.shared import activity_task_queue

log = logging.getLogger(__name__)

#: Pollers per tenant queue: two keep a slot-sized worker fed without a
#: poller per slot (each idle long poll is held by the Temporal server).
POLLERS_PER_TENANT = 2


@dataclass
class TenantWorker:
    slots: int
    worker: Worker
    task: asyncio.Task
    executor: ThreadPoolExecutor | None  # own threads, or None when sharing


class TenantActivityWorkers:
    def __init__(self, client: Client, workflow_task_queue: str, activities: Sequence[Callable],
                 list_tenants: Callable[[], list[tuple[str, str]]], slots_for_plan: Callable[[str], int | None],
                 shared_executor: Executor, shared_slots: int, graceful_shutdown: timedelta) -> None:
        """``slots_for_plan`` answers a plan's activity_slots, or None when
        the tenant has no budget (budgets off): such tenants share
        ``shared_executor`` first come, first served, as before budgets."""
        self._client = client
        self._workflow_task_queue = workflow_task_queue
        self._activities = list(activities)
        self._list_tenants = list_tenants
        self._slots_for_plan = slots_for_plan
        self._shared_executor = shared_executor
        self._shared_slots = shared_slots
        self._graceful_shutdown = graceful_shutdown
        self._workers: dict[str, TenantWorker] = {}

    @property
    def slots(self) -> Mapping[str, int]:
        return {tenant_id: running.slots for tenant_id, running in self._workers.items()}

    async def refresh(self) -> None:
        tenants = dict(await asyncio.to_thread(self._list_tenants))
        for tenant_id, plan in tenants.items():
            budget = self._slots_for_plan(plan)
            slots = self._shared_slots if budget is None else max(1, int(budget))
            running = self._workers.get(tenant_id)
            if (running is not None and not running.task.done() and running.slots == slots
                    and (running.executor is None) == (budget is None)):
                continue  # unchanged (a worker that died is started again)
            self._workers[tenant_id] = self._start(tenant_id, slots, own_threads=budget is not None)
            log.info("tenant %s (%s): %d activity slots on %s", tenant_id, plan, slots,
                     activity_task_queue(self._workflow_task_queue, tenant_id))
            if running is not None:
                asyncio.create_task(self._stop(running))
        for tenant_id in set(self._workers) - set(tenants):
            await self._stop(self._workers.pop(tenant_id))

    def _start(self, tenant_id: str, slots: int, own_threads: bool) -> TenantWorker:
        executor = ThreadPoolExecutor(slots, thread_name_prefix=f"activity-{tenant_id[:8]}") if own_threads else None
        worker = Worker(
            self._client, task_queue=activity_task_queue(self._workflow_task_queue, tenant_id),
            activities=self._activities, activity_executor=executor or self._shared_executor,
            max_concurrent_activities=slots,
            activity_task_poller_behavior=PollerBehaviorSimpleMaximum(min(slots, POLLERS_PER_TENANT)),
            graceful_shutdown_timeout=self._graceful_shutdown,
        )
        return TenantWorker(slots, worker, asyncio.create_task(worker.run()), executor)

    async def _stop(self, running: TenantWorker) -> None:
        try:
            await running.worker.shutdown()
        except Exception:  # shutting down must go on for the other tenants
            log.exception("stopping a tenant's activity worker")
        if running.executor is not None:
            running.executor.shutdown(wait=False)

    async def run(self, stop: asyncio.Event, refresh_s: float) -> None:
        """Refresh until ``stop`` is set (a failed refresh is retried later)."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), refresh_s)
            except TimeoutError:
                pass
            if stop.is_set():
                break
            try:
                await self.refresh()
            except Exception:  # the database may be restarting: keep the current workers
                log.exception("refreshing the tenants' activity workers")

    async def shutdown(self) -> None:
        workers, self._workers = list(self._workers.values()), {}
        await asyncio.gather(*(self._stop(running) for running in workers))
