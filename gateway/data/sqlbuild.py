"""Turn parsed PostgREST queries into parametrised SQL.

Identifiers are only ever names found in the catalog (then quoted); every
value travels as a query parameter.  Results are serialised to JSON by
PostgreSQL (json_agg) so rows never pass through Python objects, and the
checks on a result (singular, max-affected, response size) run in the same
statement (see refusals.py), so a refused write is never committed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg2.extras import Json

from gateway.data import refusals
from gateway.data.catalog import TEXT_TYPES, TableInfo, quote_ident
from gateway.data.grammar import (
    FULL_TEXT_OPERATORS,
    Condition,
    Logic,
    OrderTerm,
    QueryParams,
    SelectItem,
)
from gateway.data.values import check_value
from gateway.errors import ApiError
from gateway.settings import Settings

_COMPARISONS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_IS = {"null": "IS NULL", "not_null": "IS NOT NULL", "true": "IS TRUE", "false": "IS FALSE",
       "unknown": "IS UNKNOWN"}
# PostgREST's full-text operators and the tsquery parser each one uses.
_TSQUERY = {"fts": "to_tsquery", "plfts": "plainto_tsquery", "phfts": "phraseto_tsquery",
            "wfts": "websearch_to_tsquery"}
assert set(_TSQUERY) == FULL_TEXT_OPERATORS


@dataclass(frozen=True)
class ResultShape:
    """What the response carries and which checks guard it."""
    representation: bool = True       # rows in the body (reads always)
    singular: bool = False            # Accept: application/vnd.pgrst.object+json
    max_affected: int | None = None   # Prefer: handling=strict, max-affected=N
    strip_nulls: bool = False         # Accept: ...;nulls=stripped
    csv: bool = False                 # Accept: text/csv: rows as arrays of column text
    max_bytes: int = Settings.data_max_response_bytes


def _select_columns(table: TableInfo, items: list[SelectItem]) -> list[tuple[str, str]]:
    """(SQL, output name) per selected column, ``*`` expanded.  An output
    name given twice is refused: it would only repeat bytes in every row."""
    columns: list[tuple[str, str]] = []
    for item in items:
        if item.column == "*":
            columns.extend((quote_ident(c), c) for c in table.columns)
            continue
        column = table.require_column(item.column)
        columns.append((f"{column} AS {quote_ident(item.alias)}", item.alias) if item.alias
                       else (column, item.column))
    names = [name for _, name in columns]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ApiError(400, "PGRST100", "select names a column more than once",
                       details=f"repeated: {', '.join(duplicates)}", hint="give each column once, or an alias")
    return columns


def select_list(table: TableInfo, items: list[SelectItem]) -> str:
    return ", ".join(sql for sql, _ in _select_columns(table, items))


def output_names(table: TableInfo, items: list[SelectItem]) -> list[str]:
    """The keys of each returned row, in order (the CSV header)."""
    return [name for _, name in _select_columns(table, items)]


def where_clause(table: TableInfo, where: Logic, params: list[Any]) -> str:
    if not where.items:
        return ""
    return " WHERE " + _logic_sql(table, where, params)


def _logic_sql(table: TableInfo, node: Condition | Logic, params: list[Any]) -> str:
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
    if cond.operator in _TSQUERY:
        return _full_text_sql(table, cond, column, params)
    raise AssertionError(cond.operator)


def _full_text_sql(table: TableInfo, cond: Condition, column: str, params: list[Any]) -> str:
    """``col @@ to_tsquery([lang,] value)``; a text column is turned into a
    tsvector with the same language, so stemming applies to both sides."""
    column_type = table.types[cond.column]
    if column_type == "tsvector":
        vector = column
    elif column_type in TEXT_TYPES:
        if cond.language:
            params.append(cond.language)
        vector = f"to_tsvector(%s::regconfig, {column})" if cond.language else f"to_tsvector({column})"
    else:
        raise ApiError(400, "PGRST100", f"full-text search needs a text or tsvector column, "
                       f"{table.name}.{cond.column} is {column_type}")
    function = _TSQUERY[cond.operator]
    if cond.language:
        params.append(cond.language)
    params.append(cond.value)
    query = f"{function}(%s::regconfig, %s)" if cond.language else f"{function}(%s)"
    return f"{vector} @@ {query}"


def order_clause(table: TableInfo, order: list[OrderTerm], tiebreak: tuple[str, ...] = ()) -> str:
    """ORDER BY; ``tiebreak`` columns (a primary key) follow, so that a
    limited write picks the same rows whatever the physical order."""
    terms = []
    for term in order:
        sql = table.require_column(term.column) + (" DESC" if term.descending else " ASC")
        if term.nulls:
            sql += " NULLS FIRST" if term.nulls == "first" else " NULLS LAST"
        terms.append(sql)
    ordered = {term.column for term in order}
    terms.extend(quote_ident(column) + " ASC" for column in tiebreak if column not in ordered)
    return " ORDER BY " + ", ".join(terms) if terms else ""


def _rows_sql(shape: ResultShape, names: list[str]) -> str:
    """The JSON array of the rows of ``_r``: objects, or for CSV arrays of
    each column's text output (ARRAY[], which has no argument limit)."""
    if shape.csv:
        row = "ARRAY[" + ", ".join(f"_r.{quote_ident(name)}::text" for name in names) + "]"
    else:
        row = "json_strip_nulls(row_to_json(_r))" if shape.strip_nulls else "_r"
    return f"coalesce(json_agg({row}), '[]')::text"


def _size_check(max_bytes: int) -> str:
    detail = f"'the response would be ' || octet_length(_b.body) || ' bytes; the cap is {int(max_bytes)}'"
    refuse = refusals.refuse_sql(refusals.RESPONSE_TOO_LARGE, "response too large", detail)
    return f"WHEN octet_length(_b.body) > {int(max_bytes)} THEN {refuse}"


def read_sql(table: TableInfo, query: QueryParams, limit: int | None, offset: int,
             with_total: bool = False, shape: ResultShape = ResultShape()) -> tuple[str, list[Any]]:
    """One statement returning (rows as JSON text, rows returned, total or
    NULL): the total is a subquery of the same statement, so it is counted
    in the same snapshot and costs no extra round trip."""
    total, params = count_sql(table, query) if with_total else ("NULL", [])
    columns = _select_columns(table, query.select)
    inner = f"SELECT {', '.join(sql for sql, _ in columns)} FROM {table.quoted}"
    inner += where_clause(table, query.where, params) + order_clause(table, query.order)
    if limit is not None:
        inner += " LIMIT %s"
        params.append(limit)
    if offset:
        inner += " OFFSET %s"
        params.append(offset)
    total_sql = f"({total})" if with_total else total
    return (f"SELECT CASE {_size_check(shape.max_bytes)} ELSE _b.body END, _b.n, _b.total "
            f"FROM (SELECT {_rows_sql(shape, [name for _, name in columns])} AS body, count(*) AS n, "
            f"{total_sql} AS total "
            f"FROM ({inner}) _r) _b"), params


def count_sql(table: TableInfo, query: QueryParams) -> tuple[str, list[Any]]:
    params: list[Any] = []
    return f"SELECT count(*) FROM {table.quoted}" + where_clause(table, query.where, params), params


def _mutation(table: TableInfo, query: QueryParams, statement: str, shape: ResultShape) -> str:
    """Wrap a data-modifying statement: RETURNING what the response needs,
    then the result checks, which raise (rolling the write back) when the
    result is not what the caller allowed."""
    columns = _select_columns(table, query.select)
    returning = f" RETURNING {', '.join(sql for sql, _ in columns)}" if shape.representation else " RETURNING 1"
    body = _rows_sql(shape, [name for _, name in columns]) if shape.representation else "NULL::text"
    checks = []
    if shape.singular:
        checks.append("WHEN _b.n <> 1 THEN " + refusals.refuse_sql(
            refusals.SINGULAR, "JSON object requested, multiple (or no) rows returned",
            "'The result contains ' || _b.n || ' rows'"))
    if shape.max_affected is not None:
        checks.append(f"WHEN _b.n > {int(shape.max_affected)} THEN " + refusals.refuse_sql(
            refusals.MAX_AFFECTED, "Query result exceeds max-affected preference constraint",
            "'The query affects ' || _b.n || ' rows'"))
    checks.append(_size_check(shape.max_bytes))
    return (f"WITH _m AS ({statement}{returning}) SELECT CASE {' '.join(checks)} ELSE _b.body END, _b.n "
            f"FROM (SELECT {body} AS body, count(*) AS n FROM _m _r) _b")


def adapt(column: str, value: Any) -> Any:
    check_value(column, value)
    return Json(value) if isinstance(value, (dict, list)) else value


def insert_sql(table: TableInfo, rows: list[dict[str, Any]], query: QueryParams, shape: ResultShape, *,
               missing_default: bool = False, resolution: str | None = None) -> tuple[str, list[Any]]:
    """INSERT (or upsert with ``resolution``: merge-duplicates or
    ignore-duplicates, on ``on_conflict`` or the primary key).

    Without ``columns`` the columns are the union of the rows' keys and a
    key missing from one row gets the column DEFAULT.  With ``columns`` (as
    PostgREST) only those keys are read; one missing from a row is NULL, or
    the DEFAULT with ``Prefer: missing=default``.  tenant_id defaults to the
    caller's, and RLS refuses any other, on insert and on the conflict path.
    """
    if query.columns is not None:
        for key in query.columns:
            table.require_column(key)
        columns = list(query.columns)
        absent = "DEFAULT" if missing_default else "NULL"
    else:
        keys = {key for row in rows for key in row}
        for key in keys:
            table.require_column(key)
        columns = [c for c in table.columns if c in keys]
        absent = "DEFAULT"
    params: list[Any] = []
    values_sql = []
    for row in rows:
        cells = []
        for column in columns:
            if column in row:
                cells.append("%s")
                params.append(adapt(column, row[column]))
            else:
                cells.append(absent)
        values_sql.append("(" + ", ".join(cells) + ")")
    if columns:
        statement = (f"INSERT INTO {table.quoted} ({', '.join(quote_ident(c) for c in columns)}) "
                     f"VALUES {', '.join(values_sql)}")
    else:
        statement = f"INSERT INTO {table.quoted} DEFAULT VALUES"
    if resolution:
        statement += _on_conflict(table, query, columns, resolution)
    return _mutation(table, query, statement, shape), params


def _on_conflict(table: TableInfo, query: QueryParams, columns: list[str], resolution: str) -> str:
    target = query.on_conflict or table.primary_key
    if not target:
        raise ApiError(400, "PGRST100", f"an upsert on '{table.name}' needs on_conflict=<columns>",
                       details="the relation has no primary key")
    target_sql = ", ".join(table.require_column(c) for c in target)
    if resolution == "ignore-duplicates" or not columns:
        return f" ON CONFLICT ({target_sql}) DO NOTHING"
    assignments = ", ".join(f"{quote_ident(c)} = EXCLUDED.{quote_ident(c)}" for c in columns)
    return f" ON CONFLICT ({target_sql}) DO UPDATE SET {assignments}"


def _bounded_where(table: TableInfo, query: QueryParams, params: list[Any]) -> str:
    """The WHERE of a PATCH/DELETE.  With ``limit``/``offset`` (PostgREST's
    limited update/delete) only the rows of that page of the filtered rows,
    in ``order`` then primary-key order, are affected; the filters are also
    applied to the target rows, so a row changed concurrently is rechecked."""
    where = where_clause(table, query.where, params)
    if query.limit is None and query.offset is None:
        return where
    if not query.order:
        raise ApiError(400, "PGRST109", "a limited update or delete needs an explicit order",
                       hint="add order=<column> (the primary key breaks ties)")
    if not table.primary_key:
        raise ApiError(400, "PGRST109", f"a limited update or delete needs a primary key; '{table.name}' has none")
    key = ", ".join(quote_ident(c) for c in table.primary_key)
    page = f"SELECT {key} FROM {table.quoted}" + where_clause(table, query.where, params)
    page += order_clause(table, query.order, tiebreak=table.primary_key)
    if query.limit is not None:
        page += " LIMIT %s"
        params.append(query.limit)
    if query.offset:
        page += " OFFSET %s"
        params.append(query.offset)
    bound = f"({key}) IN ({page})"
    return f"{where} AND {bound}" if where else f" WHERE {bound}"


def update_sql(table: TableInfo, changes: dict[str, Any], query: QueryParams,
               shape: ResultShape) -> tuple[str, list[Any]]:
    params: list[Any] = []
    if query.columns is not None:  # as PostgREST: only these keys, a missing one is NULL
        changes = {column: changes.get(column) for column in query.columns}
    assignments = []
    for column, value in changes.items():
        assignments.append(f"{table.require_column(column)} = %s")
        params.append(adapt(column, value))
    statement = f"UPDATE {table.quoted} SET {', '.join(assignments)}" + _bounded_where(table, query, params)
    return _mutation(table, query, statement, shape), params


def delete_sql(table: TableInfo, query: QueryParams, shape: ResultShape) -> tuple[str, list[Any]]:
    params: list[Any] = []
    statement = f"DELETE FROM {table.quoted}" + _bounded_where(table, query, params)
    return _mutation(table, query, statement, shape), params
