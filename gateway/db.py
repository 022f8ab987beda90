"""PostgreSQL access: a bounded connection pool and per-request transactions
that carry the caller's claims, so row-level security decides what a query
sees.

Under gevent the server calls ``psycogreen.gevent.patch_psycopg()`` first,
so a query waits on the hub instead of blocking the process; the pool hands
each greenlet its own connection and never shares one.
"""
from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson
import psycopg2
import psycopg2.extensions
import psycopg2.extras
from flask import Flask, current_app, g, has_request_context

from gateway.errors import ApiError
from gateway.prepared import PreparedStatements

if TYPE_CHECKING:  # gateway.budgets reads plans through this module
    from gateway.budgets import Budgets

# Claims are set for the current transaction only (is_local = true), so a
# pooled connection never carries one caller's identity into the next.
SET_CLAIMS_SQL = "SELECT set_config('request.jwt.claims', %s, true)"
# The same with the tenant plan's statement timeout, also local to the
# transaction.  PostgreSQL (13+) arms statement_timeout afresh for each
# statement of a simple-query message, so it applies to the statement that
# follows in the same message.
SET_CLAIMS_AND_TIMEOUT_SQL = SET_CLAIMS_SQL + ", set_config('statement_timeout', %s, true)"


class PoolExhausted(ApiError):
    def __init__(self) -> None:
        super().__init__(503, "db_pool_exhausted", "no database connection became free in time",
                         hint="raise APPRUN_DB_POOL_SIZE or lower the load")


class GatewayConnection(psycopg2.extensions.connection):
    """A connection that remembers the statements prepared on it (they live
    exactly as long as the server session does)."""

    prepared: PreparedStatements


class ConnectionPool:
    """A blocking, bounded LIFO pool.  Under gevent's monkey patching the
    queue and lock are cooperative, so a waiting greenlet yields."""

    def __init__(self, dsn: str, size: int, timeout_s: float, statement_timeout_ms: int,
                 prepared_statements: int = 0) -> None:
        self._dsn = dsn
        self._prepared_statements = prepared_statements
        self._size = size
        self._timeout_s = timeout_s
        self._statement_timeout_ms = statement_timeout_ms
        self._idle: queue.LifoQueue[psycopg2.extensions.connection] = queue.LifoQueue()
        self._created = 0
        self._lock = threading.Lock()

    def _connect(self) -> psycopg2.extensions.connection:
        conn = psycopg2.connect(
            self._dsn,
            application_name="apprun-gateway",
            options=f"-c statement_timeout={self._statement_timeout_ms}",
            connect_timeout=5,
            connection_factory=GatewayConnection,
        )
        conn.prepared = PreparedStatements(self._prepared_statements)
        # Transactions are written out by tenant_transaction() so that BEGIN
        # and the claims travel in the same message as the first statement
        # (psycopg2's implicit BEGIN would be a round trip of its own).
        conn.autocommit = True
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


class ClaimsCursor:
    """A cursor whose first statement carries the caller's claims.

    Round trips per request (measured as the gateway's and PostgreSQL's main
    per-request cost): psycopg2's default was BEGIN, set claims, statement,
    COMMIT, i.e. four.  Here a transaction is ``BEGIN; set claims; first
    statement`` in one simple-query message plus ``COMMIT``: two.  With
    ``single_statement`` there is no BEGIN: PostgreSQL runs the statements of
    one simple-query message as one implicit transaction, so claims and
    statement commit (or fail) together in a single round trip.

    The first statement is sent as ``EXECUTE`` of a statement prepared on
    this connection (gateway/prepared.py) when its shape allows, still after
    the claims and in the same message: PostgreSQL then skips parsing and
    planning it (measured in docs/headroom-measurements.md, "Cost and headroom").
    """

    def __init__(self, cursor: psycopg2.extensions.cursor, claims_json: str, single_statement: bool,
                 prepared: PreparedStatements | None = None, statement_timeout_ms: int | None = None) -> None:
        self._cursor = cursor
        self._prepared = prepared
        if statement_timeout_ms is None:
            self._set_claims, self._claims_args = SET_CLAIMS_SQL, (claims_json,)
        else:
            self._set_claims, self._claims_args = SET_CLAIMS_AND_TIMEOUT_SQL, (claims_json, str(statement_timeout_ms))
        self._single_statement = single_statement
        self.statements = 0

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        if self.statements and self._single_statement:
            raise RuntimeError("a single-statement transaction ran a second statement")
        if self.statements:
            self._cursor.execute(sql, params)
        else:
            prefix = self._set_claims + "; " if self._single_statement else "BEGIN; " + self._set_claims + "; "
            # Prepared before BEGIN, so a shape that cannot be prepared
            # leaves no failed transaction behind.
            call = self._prepared.execute_call(self._cursor, sql, params or ()) if self._prepared is not None else None
            if call is not None:
                body, args = call
            else:
                # Without params psycopg2 leaves '%' alone; once params are
                # added every literal '%' must be doubled.
                body = sql if params is not None else sql.replace("%", "%%")
                args = tuple(params or ())
            self._cursor.execute(prefix + body, (*self._claims_args, *args))
        self.statements += 1

    def __getattr__(self, name: str) -> Any:  # fetchone, fetchall, rowcount, description...
        return getattr(self._cursor, name)


@contextlib.contextmanager
def tenant_transaction(claims: Mapping[str, Any], single_statement: bool = False) -> Iterator[ClaimsCursor]:
    """One transaction with the caller's claims set; commits on success,
    rolls back on any error (so a failed bulk insert writes nothing).
    ``single_statement=True``: the route runs exactly one statement, which
    then costs one round trip (see ClaimsCursor).

    In a request the connection is held inside one of the tenant's
    ``db_connections`` (gateway/budgets.py): a tenant holding all of them
    waits a moment for one of its own, then gets 429, and never takes a
    connection another tenant waits for.  The plan's statement timeout, if
    it has one, is set with the claims."""
    pool: ConnectionPool = current_app.extensions["apprun.db"]
    with _tenant_share(claims) as statement_timeout_ms, pool.connection() as conn:
        with conn.cursor() as raw:
            cursor = ClaimsCursor(raw, orjson.dumps(claims).decode(), single_statement, getattr(conn, "prepared", None),
                                  statement_timeout_ms)
            try:
                yield cursor
            except BaseException:
                with contextlib.suppress(Exception):  # the original error matters more
                    _end_transaction(conn, "ROLLBACK")
                raise
            _end_transaction(conn, "COMMIT")


#: flask.g flag: this request's first transaction passed the db_connections budget.
_ADMITTED = "apprun_db_admitted"


@contextlib.contextmanager
def _tenant_share(claims: Mapping[str, Any]) -> Iterator[int | None]:
    """The tenant's share of the pool for one transaction (yields its plan's
    statement timeout).  A request's first transaction may be refused (429);
    its later ones are counted but not refused, so no request stops halfway
    (Budgets.database_share).  Only requests are admitted this way: a
    background job in an app context (the storage sweeper) works for the
    platform, one connection at a time, and must not fail because a tenant
    is busy."""
    budgets: Budgets | None = current_app.extensions.get("apprun.budgets")
    if budgets is None or not has_request_context():
        yield None
        return
    budgets.pause_share(claims["tenant_id"])  # before the connection: a waiting request holds none
    with budgets.database_share(claims["tenant_id"], admitted=g.get(_ADMITTED, False)) as statement_timeout_ms:
        setattr(g, _ADMITTED, True)
        yield statement_timeout_ms


def _end_transaction(conn: psycopg2.extensions.connection, command: str) -> None:
    """psycopg2's commit()/rollback() do nothing in autocommit mode, so the
    explicit BEGIN is closed explicitly (when one is open)."""
    if conn.closed or conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE:
        return
    with conn.cursor() as cur:
        cur.execute(command)


@contextlib.contextmanager
def plain_cursor() -> Iterator[psycopg2.extensions.cursor]:
    """A cursor with no claims, each statement its own transaction
    (autocommit): only for work on behalf of no tenant (login lookup through
    its SECURITY DEFINER function, readiness, the catalog), so it takes no
    tenant's ``db_connections``.  The budgets' plan lookup also uses it: it
    runs before the slot can be taken and at most once per tenant at a time."""
    pool: ConnectionPool = current_app.extensions["apprun.db"]
    with pool.connection() as conn:
        with conn.cursor() as cur:
            yield cur


def init_app(app: Flask) -> None:
    settings = app.config["APPRUN_SETTINGS"]
    app.extensions["apprun.db"] = ConnectionPool(
        settings.database_url, settings.db_pool_size, settings.db_pool_timeout_s, settings.db_statement_timeout_ms,
        settings.db_prepared_statements,
    )
