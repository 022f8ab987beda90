"""PostgreSQL access: a bounded connection pool and per-request transactions
that carry the caller's claims, so row-level security decides what a query
sees.

Under gevent the server calls ``psycogreen.gevent.patch_psycopg()`` first,
so a query waits on the hub instead of blocking the process; the pool hands
each greenlet its own connection and never shares one.
"""
from __future__ import annotations

import contextlib
import json
import queue
import threading
from typing import Any, Iterator, Mapping

import psycopg2
import psycopg2.extensions
import psycopg2.extras
from flask import Flask, current_app

from gateway.errors import ApiError

# Claims are set for the current transaction only (is_local = true), so a
# pooled connection never carries one caller's identity into the next.
SET_CLAIMS_SQL = "SELECT set_config('request.jwt.claims', %s, true)"


class PoolExhausted(ApiError):
    def __init__(self) -> None:
        super().__init__(503, "db_pool_exhausted", "no database connection became free in time",
                         hint="raise APPRUN_DB_POOL_SIZE or lower the load")


class ConnectionPool:
    """A blocking, bounded LIFO pool.  Under gevent's monkey patching the
    queue and lock are cooperative, so a waiting greenlet yields."""

    def __init__(self, dsn: str, size: int, timeout_s: float, statement_timeout_ms: int) -> None:
        self._dsn = dsn
        self._size = size
        self._timeout_s = timeout_s
        self._statement_timeout_ms = statement_timeout_ms
        self._idle: "queue.LifoQueue[psycopg2.extensions.connection]" = queue.LifoQueue()
        self._created = 0
        self._lock = threading.Lock()

    def _connect(self) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(
            self._dsn,
            application_name="apprun-gateway",
            options=f"-c statement_timeout={self._statement_timeout_ms}",
            connect_timeout=5,
        )
        return conn

    def acquire(self) -> psycopg2.extensions.connection:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            may_create = self._created < self._size
            if may_create:
                self._created += 1
        if may_create:
            try:
                return self._connect()
            except Exception:
                with self._lock:
                    self._created -= 1
                raise
        try:
            return self._idle.get(timeout=self._timeout_s)
        except queue.Empty:
            raise PoolExhausted() from None

    def release(self, conn: psycopg2.extensions.connection) -> None:
        if conn.closed or conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            # A connection in an unknown state is dropped, never reused.
            with contextlib.suppress(Exception):
                conn.close()
            with self._lock:
                self._created -= 1
            return
        self._idle.put(conn)

    def close(self) -> None:
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                break
            with contextlib.suppress(Exception):
                conn.close()
            with self._lock:
                self._created -= 1

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        conn = self.acquire()
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(Exception):
                conn.rollback()
            raise
        finally:
            self.release(conn)


@contextlib.contextmanager
def tenant_transaction(claims: Mapping[str, Any]) -> Iterator[psycopg2.extensions.cursor]:
    """One transaction with the caller's claims set; commits on success,
    rolls back on any error (so a failed bulk insert writes nothing)."""
    pool: ConnectionPool = current_app.extensions["apprun.db"]
    with pool.connection() as conn:
        with conn.cursor() as cur:
            cur.execute(SET_CLAIMS_SQL, (json.dumps(dict(claims)),))
            yield cur
        conn.commit()


@contextlib.contextmanager
def plain_cursor() -> Iterator[psycopg2.extensions.cursor]:
    """A transaction with no claims: only for routes that need no tenant
    (login lookup through its SECURITY DEFINER function, readiness)."""
    pool: ConnectionPool = current_app.extensions["apprun.db"]
    with pool.connection() as conn:
        with conn.cursor() as cur:
            yield cur
        conn.commit()


def init_app(app: Flask) -> None:
    settings = app.config["APPRUN_SETTINGS"]
    app.extensions["apprun.db"] = ConnectionPool(
        settings.database_url, settings.db_pool_size, settings.db_pool_timeout_s, settings.db_statement_timeout_ms
    )
