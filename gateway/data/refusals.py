"""Checks that run inside the data API's SQL statement, so that a refused
result rolls back with its writes (one statement, one implicit transaction:
nothing is committed and no extra round trip is spent).

The statement calls ``data_api_refuse(sqlstate, message, detail)`` (defined
in stack/schema.sql), which raises with a SQLSTATE of the private class
``DA``; ``gateway.pgerrors`` turns it back into the HTTP error below.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Refusal:
    sqlstate: str  # class DA: no PostgreSQL error uses it
    status: int
    code: str      # the API error code the client sees
    hint: str | None = None


SINGULAR = Refusal("DA116", 406, "PGRST116")
MAX_AFFECTED = Refusal("DA124", 400, "PGRST124")
RESPONSE_TOO_LARGE = Refusal(
    "DA413", 400, "response_too_large",
    hint="ask for fewer rows (limit, Range) or fewer columns (select); APPRUN_DATA_MAX_RESPONSE_BYTES sets the cap",
)
BY_SQLSTATE = {refusal.sqlstate: refusal for refusal in (SINGULAR, MAX_AFFECTED, RESPONSE_TOO_LARGE)}


def refuse_sql(refusal: Refusal, message: str, detail_sql: str) -> str:
    """The SQL expression that raises ``refusal``; ``detail_sql`` is an SQL
    text expression.  The message is a constant of this package: no quotes,
    no '%' (the statement goes through psycopg2's %-formatting)."""
    assert "'" not in message and "%" not in message, message
    return f"public.data_api_refuse('{refusal.sqlstate}', '{message}', {detail_sql})"
