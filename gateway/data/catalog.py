"""The data API's schema cache: which tables are exposed, their columns and
whether the gateway role may write them.  Read once from the database (as
the gateway role, so column privileges apply) instead of per request."""
from __future__ import annotations

import threading
from dataclasses import dataclass

from gateway.errors import ApiError

COLUMNS_SQL = """
SELECT c.table_name, c.column_name, c.data_type
FROM information_schema.columns c
WHERE c.table_schema = 'public' AND c.table_name = ANY(%s)
ORDER BY c.table_name, c.ordinal_position
"""
PRIVILEGES_SQL = """
SELECT t, has_table_privilege(current_user, format('public.%%I', t), 'INSERT'),
          has_table_privilege(current_user, format('public.%%I', t), 'UPDATE'),
          has_table_privilege(current_user, format('public.%%I', t), 'DELETE')
FROM unnest(%s::text[]) AS t
WHERE to_regclass(format('public.%%I', t)) IS NOT NULL
"""
PRIMARY_KEYS_SQL = """
SELECT c.relname, a.attname
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)
WHERE i.indisprimary AND c.relnamespace = 'public'::regnamespace AND c.relname = ANY(%s)
ORDER BY c.relname, array_position(i.indkey::int2[], a.attnum)
"""
# Columns the full-text operators accept: text is turned into a tsvector.
TEXT_TYPES = frozenset({"text", "character varying", "character"})


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class TableInfo:
    name: str
    columns: tuple[str, ...]
    types: dict[str, str]
    can_insert: bool
    can_update: bool
    can_delete: bool
    primary_key: tuple[str, ...] = ()

    @property
    def quoted(self) -> str:
        return "public." + quote_ident(self.name)

    def require_column(self, column: str) -> str:
        if column not in self.types:
            raise ApiError(400, "42703", f"column {self.name}.{column} does not exist",
                           hint=f"columns: {', '.join(self.columns)}")
        return quote_ident(column)


class Catalog:
    def __init__(self, exposed: tuple[str, ...], read_only: tuple[str, ...]) -> None:
        self._exposed = exposed
        self._read_only = set(read_only)
        self._tables: dict[str, TableInfo] | None = None
        self._lock = threading.Lock()

    def load(self, cursor) -> None:
        cursor.execute(COLUMNS_SQL, (list(self._exposed),))
        columns: dict[str, list[tuple[str, str]]] = {}
        for table, column, data_type in cursor.fetchall():
            columns.setdefault(table, []).append((column, data_type))
        cursor.execute(PRIMARY_KEYS_SQL, (list(self._exposed),))
        primary_keys: dict[str, list[str]] = {}
        for table, column in cursor.fetchall():
            primary_keys.setdefault(table, []).append(column)
        cursor.execute(PRIVILEGES_SQL, (list(self._exposed),))
        tables = {}
        for table, can_insert, can_update, can_delete in cursor.fetchall():
            if table not in columns:
                continue
            writable = table not in self._read_only
            tables[table] = TableInfo(
                table,
                tuple(c for c, _ in columns[table]),
                dict(columns[table]),
                can_insert and writable,
                can_update and writable,
                can_delete and writable,
                tuple(primary_keys.get(table, ())),
            )
        with self._lock:
            self._tables = tables

    @property
    def loaded(self) -> bool:
        return self._tables is not None

    def table(self, name: str) -> TableInfo:
        assert self._tables is not None, "catalog not loaded"
        info = self._tables.get(name)
        if info is None:
            raise ApiError(404, "PGRST205", f"Could not find the table 'public.{name}' in the schema cache",
                           hint=f"exposed tables: {', '.join(sorted(self._tables))}")
        return info
