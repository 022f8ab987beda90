"""Server-side prepared statements for psycopg2, per connection, by SQL shape.

psycopg2 sends every statement as a simple query that PostgreSQL parses and
plans again each time.  Here a statement's shape (its SQL text and the
types its parameters get) is ``PREPARE``d once per pooled connection and
later sent as ``EXECUTE name(params)``: PostgreSQL then skips parsing,
analysis and (once it settles on a generic plan) planning.  Row-level
security is unaffected: policies are part of the plan and read the claims
with ``current_setting()`` at execution time.

Parameter types mirror what psycopg2's literals would have had in place, so
a prepared statement answers exactly as the simple query would: a Python
``int`` is an ``integer`` (or ``bigint``/``numeric`` when it is larger), a
``bool`` a ``boolean``, a ``Decimal``/finite ``float`` a ``numeric``; strings,
``None`` and ``Json`` are untyped literals, so their parameters are
``unknown`` and PostgreSQL infers the type from the context as it would for
the literal.  Any other value (dates, lists, bytes...) and any SQL that
cannot be converted safely runs unprepared, as before.
"""
from __future__ import annotations

import logging
import math
import re
from collections import OrderedDict
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2.extras import Json

NAME_PREFIX = "apprun_"
_INT4 = 2 ** 31
_INT8 = 2 ** 63
_FORMAT_CODE = re.compile(r"%(.)", re.S)
log = logging.getLogger("gateway.db")

Shape = tuple[str, tuple[str, ...]]


def parameter_type(value: Any) -> str | None:
    """The type a parameter is declared with, or None when the value's
    psycopg2 literal has no equivalent declaration (the statement then runs
    unprepared)."""
    if value is None or isinstance(value, (str, Json)):
        return "unknown"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer" if -_INT4 <= value < _INT4 else "bigint" if -_INT8 <= value < _INT8 else "numeric"
    if isinstance(value, Decimal) or (isinstance(value, float) and math.isfinite(value)):
        return "numeric"
    return None


def positional_sql(sql: str, param_count: int) -> str | None:
    """psycopg2's ``%s`` placeholders as ``$1..$n`` (and ``%%`` as ``%``);
    None for text this cannot convert safely: named placeholders, any ``$``
    (dollar quoting, existing positional parameters) or a count mismatch."""
    if "$" in sql:
        return None
    counter = 0
    failed = False

    def replace(match: re.Match[str]) -> str:
        nonlocal counter, failed
        code = match.group(1)
        if code == "%":
            return "%"
        if code == "s":
            counter += 1
            return f"${counter}"
        failed = True
        return match.group(0)

    converted = _FORMAT_CODE.sub(replace, sql)
    if failed or counter != param_count:
        return None
    return converted


class PreparedStatements:
    """The statements prepared on one connection, least recently used
    first.  Shapes that failed to prepare are remembered (as None) so they
    are not tried again on this connection."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._names: OrderedDict[Shape, str | None] = OrderedDict()
        self._serial = 0

    def execute_call(self, cursor: psycopg2.extensions.cursor, sql: str,
                     params: Sequence[Any]) -> tuple[str, tuple[Any, ...]] | None:
        """``EXECUTE name(%s, ...)`` and its arguments for ``sql``, preparing
        it first when this connection has not seen the shape; None when the
        statement must run unprepared.  Call it only outside a transaction:
        a failed PREPARE then leaves nothing to roll back."""
        if self.limit <= 0:
            return None
        types = tuple(parameter_type(value) for value in params)
        if None in types:
            return None
        shape: Shape = (sql, types)  # type: ignore[assignment]
        if shape in self._names:
            self._names.move_to_end(shape)
            name = self._names[shape]
        else:
            name = self._prepare(cursor, sql, shape[1])
            self._names[shape] = name
            if len(self._names) > self.limit:
                self._evict(cursor)
        if name is None:
            return None
        args = tuple(params)
        return (f"EXECUTE {name}({', '.join(['%s'] * len(args))})" if args else f"EXECUTE {name}"), args

    def _prepare(self, cursor: psycopg2.extensions.cursor, sql: str, types: tuple[str, ...]) -> str | None:
        text = positional_sql(sql, len(types))
        if text is None:
            return None
        self._serial += 1
        name = f"{NAME_PREFIX}{self._serial}"
        declared = f"({', '.join(types)})" if types else ""
        try:
            cursor.execute(f"PREPARE {name}{declared} AS {text}")  # no params: psycopg2 leaves the text alone
        except psycopg2.Error as exc:
            if cursor.connection.closed:
                raise
            # e.g. a parameter whose type cannot be inferred: the statement
            # runs unprepared and reports its own errors, if any.
            log.debug("statement not prepared (%s): %s", exc.pgcode, sql[:200])
            return None
        return name

    def _evict(self, cursor: psycopg2.extensions.cursor) -> None:
        _, name = self._names.popitem(last=False)
        if name is not None:
            cursor.execute(f"DEALLOCATE {name}")
