"""Activities: real work in PostgreSQL under the tenant's RLS context.

Every write is keyed by workflow id (UNIQUE (tenant_id, workflow_id)), so
a retried activity finds its earlier row instead of adding a second one.
"""
from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg2
from temporalio import activity
from temporalio.exceptions import ApplicationError

from gateway.workflows.shared import EmailInput, OutcomeInput, ProjectInput

HEARTBEAT_EVERY_S = 0.5
WELCOME_SUBJECT = "Welcome to apprun"


# The claims travel in the same simple-query message as the statements: the
# message runs as one implicit transaction (is_local claims included), so an
# activity's database work is one round trip and commits or fails whole.
SET_CLAIMS_SQL = "SELECT set_config('request.jwt.claims', %s, true); "


class ActivityDatabase:
    """Connections opened once and reused (psycopg2's pool closes every
    connection above ``minconn`` on return, which under concurrency meant a
    new PostgreSQL backend per activity)."""

    def __init__(self, dsn: str, max_connections: int) -> None:
        self._dsn = dsn
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        # The tenants' activity threads together may outnumber the
        # connections, so they wait here for one.
        self._free = threading.BoundedSemaphore(max_connections)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        with self._free:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed:
                conn = psycopg2.connect(self._dsn, application_name="apprun-worker")
                conn.autocommit = True
            try:
                yield conn
            except BaseException:
                conn.close()  # in an unknown state: never reused
                raise
            with self._lock:
                self._idle.append(conn)

    def run(self, tenant_id: str, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """``sql`` (one or more statements) under the tenant's claims, in
        one message; the first row of the last statement, if it has rows."""
        claims = json.dumps({"tenant_id": tenant_id, "role": "worker", "sub": "apprun-worker"})
        with self._connection() as conn, conn.cursor() as cur:
            cur.execute(SET_CLAIMS_SQL + sql, (claims, *params))
            return cur.fetchone() if cur.description else None

    def tenant_plans(self) -> list[tuple[str, str]]:
        """(tenant id, plan) of every tenant, for the per-tenant queues."""
        with self._connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT id, plan FROM budget_tenant_plans()")
            return [(str(tenant_id), plan) for tenant_id, plan in cur.fetchall()]

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class RegistrationActivities:
    def __init__(self, db: ActivityDatabase) -> None:
        self.db = db

    @activity.defn(name="send_welcome_email")
    def send_welcome_email(self, data: EmailInput) -> dict:
        attempt = activity.info().attempt
        if attempt <= data.fail_first_attempts:
            raise ApplicationError(f"injected failure on attempt {attempt} of send_welcome_email")
        body = f"Hello {data.email}, your apprun account is ready."
        (outbox_id,) = self.db.run(
            data.tenant_id,
            """INSERT INTO email_outbox (recipient, subject, body, workflow_id) VALUES (%s, %s, %s, %s)
               ON CONFLICT (tenant_id, workflow_id) DO NOTHING;
               SELECT id FROM email_outbox WHERE workflow_id = %s""",
            (data.email, WELCOME_SUBJECT, body, data.workflow_id, data.workflow_id),
        )
        return {"id": str(outbox_id), "attempt": attempt}

    @activity.defn(name="create_default_project")
    def create_default_project(self, data: ProjectInput) -> dict:
        attempt = activity.info().attempt
        deadline = time.monotonic() + data.delay_ms / 1000
        while time.monotonic() < deadline:  # a slow step, heartbeating so a dead worker is noticed
            activity.heartbeat()
            time.sleep(min(HEARTBEAT_EVERY_S, max(0.0, deadline - time.monotonic())))
        (project_id,) = self.db.run(
            data.tenant_id,
            """INSERT INTO projects (name, owner_email, workflow_id) VALUES (%s, %s, %s)
               ON CONFLICT (tenant_id, workflow_id) DO NOTHING;
               SELECT id FROM projects WHERE workflow_id = %s""",
            ("Default project", data.email, data.workflow_id, data.workflow_id),
        )
        return {"id": str(project_id), "attempt": attempt}

    @activity.defn(name="record_outcome")
    def record_outcome(self, data: OutcomeInput) -> None:
        self.db.run(
            data.tenant_id,
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
