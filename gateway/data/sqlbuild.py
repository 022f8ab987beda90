"""Turn parsed PostgREST queries into parametrised SQL.

Identifiers are only ever names found in the catalog (then quoted); every
value travels as a query parameter.  Results are serialised to JSON by
PostgreSQL (json_agg) so rows never pass through Python objects.
"""
from __future__ import annotations

from typing import Any, Union

from psycopg2.extras import Json

from gateway.data.catalog import TableInfo, quote_ident
from gateway.data.grammar import Condition, Logic, OrderTerm, QueryParams, SelectItem

_COMPARISONS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_IS = {"null": "IS NULL", "not_null": "IS NOT NULL", "true": "IS TRUE", "false": "IS FALSE",
       "unknown": "IS UNKNOWN"}


def select_list(table: TableInfo, items: list[SelectItem]) -> str:
    parts = []
    for item in items:
        if item.column == "*":
            parts.append(", ".join(quote_ident(c) for c in table.columns))
            continue
        column = table.require_column(item.column)
        parts.append(f"{column} AS {quote_ident(item.alias)}" if item.alias else column)
    return ", ".join(parts)


def where_clause(table: TableInfo, where: Logic, params: list[Any]) -> str:
    if not where.items:
        return ""
    return " WHERE " + _logic_sql(table, where, params)


def _logic_sql(table: TableInfo, node: Union[Condition, Logic], params: list[Any]) -> str:
    if isinstance(node, Condition):
        sql = _condition_sql(table, node, params)
    else:
        joiner = " AND " if node.operator == "and" else " OR "
        sql = "(" + joiner.join(_logic_sql(table, item, params) for item in node.items) + ")"
    return f"NOT ({sql})" if node.negated else sql


def _condition_sql(table: TableInfo, cond: Condition, params: list[Any]) -> str:
    column = table.require_column(cond.column)
    if cond.operator in _COMPARISONS:
        params.append(cond.value)
        return f"{column} {_COMPARISONS[cond.operator]} %s"
    if cond.operator in ("like", "ilike"):
        # PostgREST accepts * as the wildcard because % is awkward in URLs.
        params.append(str(cond.value).replace("*", "%"))
        return f"{column}::text {'ILIKE' if cond.operator == 'ilike' else 'LIKE'} %s"
    if cond.operator == "in":
        if not cond.value:
            return "false"
        params.extend(cond.value)
        return f"{column} IN ({', '.join(['%s'] * len(cond.value))})"
    if cond.operator == "is":
        return f"{column} {_IS[str(cond.value)]}"
    raise AssertionError(cond.operator)


def order_clause(table: TableInfo, order: list[OrderTerm]) -> str:
    if not order:
        return ""
    terms = []
    for term in order:
        sql = table.require_column(term.column) + (" DESC" if term.descending else " ASC")
        if term.nulls:
            sql += " NULLS FIRST" if term.nulls == "first" else " NULLS LAST"
        terms.append(sql)
    return " ORDER BY " + ", ".join(terms)


def read_sql(table: TableInfo, query: QueryParams, limit: int | None, offset: int,
             with_total: bool = False) -> tuple[str, list[Any]]:
    """One statement returning (rows as JSON text, rows returned, total or
    NULL): the total is a subquery of the same statement, so it is counted
    in the same snapshot and costs no extra round trip."""
    total, params = count_sql(table, query) if with_total else ("NULL", [])
    inner = f"SELECT {select_list(table, query.select)} FROM {table.quoted}"
    inner += where_clause(table, query.where, params) + order_clause(table, query.order)
    if limit is not None:
        inner += " LIMIT %s"
        params.append(limit)
    if offset:
        inner += " OFFSET %s"
        params.append(offset)
    total_sql = f"({total})" if with_total else total
    return f"SELECT coalesce(json_agg(_r), '[]')::text, count(*), {total_sql} FROM ({inner}) _r", params


def count_sql(table: TableInfo, query: QueryParams) -> tuple[str, list[Any]]:
    params: list[Any] = []
    return f"SELECT count(*) FROM {table.quoted}" + where_clause(table, query.where, params), params


def _returning(table: TableInfo, query: QueryParams, representation: bool) -> tuple[str, str]:
    """RETURNING list and the outer SELECT that serialises it."""
    if representation:
        return (f" RETURNING {select_list(table, query.select)}",
                "SELECT coalesce(json_agg(_r), '[]')::text, count(*) FROM _m _r")
    return " RETURNING 1", "SELECT NULL, count(*) FROM _m"


def adapt(value: Any) -> Any:
    return Json(value) if isinstance(value, (dict, list)) else value


def insert_sql(table: TableInfo, rows: list[dict[str, Any]], query: QueryParams,
               representation: bool) -> tuple[str, list[Any]]:
    # Union of keys, in the table's column order; a key missing from one
    # row gets the column DEFAULT (tenant_id defaults to the caller's).
    keys = {key for row in rows for key in row}
    for key in keys:
        table.require_column(key)
    columns = [c for c in table.columns if c in keys]
    params: list[Any] = []
    values_sql = []
    for row in rows:
        cells = []
        for column in columns:
            if column in row:
                cells.append("%s")
                params.append(adapt(row[column]))
            else:
                cells.append("DEFAULT")
        values_sql.append("(" + ", ".join(cells) + ")")
    returning, outer = _returning(table, query, representation)
    if columns:
        statement = (f"INSERT INTO {table.quoted} ({', '.join(quote_ident(c) for c in columns)}) "
                     f"VALUES {', '.join(values_sql)}{returning}")
    else:
        statement = f"INSERT INTO {table.quoted} DEFAULT VALUES{returning}"
    return f"WITH _m AS ({statement}) {outer}", params


def update_sql(table: TableInfo, changes: dict[str, Any], query: QueryParams,
               representation: bool) -> tuple[str, list[Any]]:
    params: list[Any] = []
    assignments = []
    for column, value in changes.items():
        assignments.append(f"{table.require_column(column)} = %s")
        params.append(adapt(value))
    statement = f"UPDATE {table.quoted} SET {', '.join(assignments)}" + where_clause(table, query.where, params)
    returning, outer = _returning(table, query, representation)
    return f"WITH _m AS ({statement}{returning}) {outer}", params


def delete_sql(table: TableInfo, query: QueryParams, representation: bool) -> tuple[str, list[Any]]:
    params: list[Any] = []
    statement = f"DELETE FROM {table.quoted}" + where_clause(table, query.where, params)
    returning, outer = _returning(table, query, representation)
    return f"WITH _m AS ({statement}{returning}) {outer}", params
