"""Activities: real work in PostgreSQL under the tenant's RLS context.

Every write is keyed by workflow id (UNIQUE (tenant_id, workflow_id)), so
a retried activity finds its earlier row instead of adding a second one.
"""
from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any, Iterator

import psycopg2
import psycopg2.pool
from temporalio import activity
from temporalio.exceptions import ApplicationError

from gateway.workflows.shared import EmailInput, OutcomeInput, ProjectInput

HEARTBEAT_EVERY_S = 0.5
WELCOME_SUBJECT = "Welcome to apprun"


class ActivityDatabase:
    def __init__(self, dsn: str, max_connections: int) -> None:
        self._pool = psycopg2.pool.ThreadedConnectionPool(1, max_connections, dsn,
                                                           application_name="apprun-worker")
        # psycopg2's pool raises when it is empty; the tenants' activity
        # threads together may outnumber the connections, so they wait here.
        self._free = threading.BoundedSemaphore(max_connections)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        with self._free:
            conn = self._pool.getconn()
            try:
                yield conn
            finally:
                self._pool.putconn(conn)

    @contextlib.contextmanager
    def tenant(self, tenant_id: str) -> Iterator[Any]:
        with self._connection() as conn, conn, conn.cursor() as cur:
            cur.execute("SELECT set_config('request.jwt.claims', %s, true)",
                        (json.dumps({"tenant_id": tenant_id, "role": "worker", "sub": "apprun-worker"}),))
            yield cur

    def tenant_plans(self) -> list[tuple[str, str]]:
        """(tenant id, plan) of every tenant, for the per-tenant queues."""
        with self._connection() as conn, conn, conn.cursor() as cur:
            cur.execute("SELECT id, plan FROM budget_tenant_plans()")
            return [(str(tenant_id), plan) for tenant_id, plan in cur.fetchall()]

    def close(self) -> None:
        self._pool.closeall()


class RegistrationActivities:
    def __init__(self, db: ActivityDatabase) -> None:
        self.db = db

    @activity.defn(name="send_welcome_email")
    def send_welcome_email(self, data: EmailInput) -> dict:
        attempt = activity.info().attempt
        if attempt <= data.fail_first_attempts:
            raise ApplicationError(f"injected failure on attempt {attempt} of send_welcome_email")
        body = f"Hello {data.email}, your apprun account is ready."
        with self.db.tenant(data.tenant_id) as cur:
            cur.execute(
                """INSERT INTO email_outbox (recipient, subject, body, workflow_id) VALUES (%s, %s, %s, %s)
                   ON CONFLICT (tenant_id, workflow_id) DO NOTHING""",
                (data.email, WELCOME_SUBJECT, body, data.workflow_id),
            )
            cur.execute("SELECT id FROM email_outbox WHERE workflow_id = %s", (data.workflow_id,))
            outbox_id = cur.fetchone()[0]
        return {"id": str(outbox_id), "attempt": attempt}

    @activity.defn(name="create_default_project")
    def create_default_project(self, data: ProjectInput) -> dict:
        attempt = activity.info().attempt
        deadline = time.monotonic() + data.delay_ms / 1000
        while time.monotonic() < deadline:  # a slow step, heartbeating so a dead worker is noticed
            activity.heartbeat()
            time.sleep(min(HEARTBEAT_EVERY_S, max(0.0, deadline - time.monotonic())))
        with self.db.tenant(data.tenant_id) as cur:
            cur.execute(
                """INSERT INTO projects (name, owner_email, workflow_id) VALUES (%s, %s, %s)
                   ON CONFLICT (tenant_id, workflow_id) DO NOTHING""",
                ("Default project", data.email, data.workflow_id),
            )
            cur.execute("SELECT id FROM projects WHERE workflow_id = %s", (data.workflow_id,))
            project_id = cur.fetchone()[0]
        return {"id": str(project_id), "attempt": attempt}

    @activity.defn(name="record_outcome")
    def record_outcome(self, data: OutcomeInput) -> None:
        with self.db.tenant(data.tenant_id) as cur:
            cur.execute(
                """UPDATE workflow_executions
                   SET status = %s, attempts = %s, result = %s, error = nullif(%s, ''), ended_at = now()
                   WHERE workflow_id = %s""",
                (data.status, data.attempts, json.dumps(data.result), data.error, data.workflow_id),
            )

    def remote(self) -> list:
        """The activities that run on the tenants' queues (slow steps)."""
        return [self.create_default_project]

    def local(self) -> list:
        """Local activities, run by the worker that runs the workflow."""
        return [self.send_welcome_email, self.create_default_project, self.record_outcome]
