"""The workflow worker: ``apprun-worker`` or ``python -m gateway.workflows.worker``.

Reads APPRUN_TEMPORAL_ADDRESS, APPRUN_TEMPORAL_NAMESPACE,
APPRUN_TEMPORAL_TASK_QUEUE and APPRUN_DATABASE_URL.  SIGTERM / SIGINT shut
it down gracefully (running activities get time to finish).
"""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from gateway.settings import Settings
from gateway.workflows.activities import ActivityDatabase, RegistrationActivities
from gateway.workflows.definitions import UserRegistrationWorkflow

ACTIVITY_THREADS = 16
CONNECT_TIMEOUT_S = 30.0
GRACEFUL_SHUTDOWN = timedelta(seconds=10)
log = logging.getLogger("gateway.workflows.worker")


async def connect(address: str, namespace: str, timeout_s: float = CONNECT_TIMEOUT_S) -> Client:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            return await Client.connect(address, namespace=namespace)
        except Exception:  # noqa: BLE001 - the server may still be starting
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def run(settings: Settings) -> None:
    if not settings.temporal_address:
        raise SystemExit("APPRUN_TEMPORAL_ADDRESS is not set")
    client = await connect(settings.temporal_address, settings.temporal_namespace)
    db = ActivityDatabase(settings.database_url, ACTIVITY_THREADS)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    with ThreadPoolExecutor(ACTIVITY_THREADS) as executor:
        worker = Worker(client, task_queue=settings.temporal_task_queue, workflows=[UserRegistrationWorkflow],
                        activities=RegistrationActivities(db).all(), activity_executor=executor,
                        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN)
        async with worker:
            log.info("worker ready on task queue %s at %s", settings.temporal_task_queue, settings.temporal_address)
            await stop.wait()
            log.info("shutting down")
    db.close()


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run(Settings.from_env()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
