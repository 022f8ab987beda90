"""PostgREST's URL grammar, parsed into plain data (no SQL here).

Supported: ``select=`` (columns, ``*``, ``alias:column``), horizontal
filters ``col=[not.]op.value`` with eq neq gt gte lt lte like ilike in is
and the full-text operators fts plfts phfts wfts (``fts(english).term``),
logic trees ``or=(...)`` / ``and=(...)`` / ``not.or=(...)`` (nested),
``order=col[.asc|.desc][.nullsfirst|.nullslast],...``, ``limit``, ``offset``,
and for writes ``columns=`` and ``on_conflict=``.
Reference: https://postgrest.org/en/stable/references/api/tables_views.html

Hostile input is refused here with a 400, before any SQL exists: NUL bytes,
non-ASCII digits, logic trees nested deeper than ``max_logic_depth``, select
lists longer than ``max_select_items`` (see ``GrammarLimits``).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.errors import ApiError
from gateway.settings import Settings

FULL_TEXT_OPERATORS = {"fts", "plfts", "phfts", "wfts"}
OPERATORS = {"eq", "neq", "gt", "gte", "lt", "lte", "like", "ilike", "in", "is"} | FULL_TEXT_OPERATORS
IS_VALUES = {"null", "not_null", "true", "false", "unknown"}
ALIAS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# A full-text operator with its optional text search configuration, such as
# fts(english).term or fts(pg_catalog.simple).term.
FULL_TEXT_RE = re.compile(r"^(fts|plfts|phfts|wfts)\(([^)]*)\)\.(.*)$", re.DOTALL)
LANGUAGE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}(?:\.[a-z_][a-z0-9_]{0,62})?$")
# ASCII digits only: str.isdigit() also accepts "²" or "٣", which int() or
# PostgreSQL then refuse; 18 digits always fit a bigint.
NON_NEGATIVE_RE = re.compile(r"[0-9]{1,18}", re.ASCII)


@dataclass(frozen=True)
class GrammarLimits:
    """Bounds on what one query string may ask for (defaults: ``Settings``)."""
    max_logic_depth: int = Settings.data_max_logic_depth
    max_select_items: int = Settings.data_max_select_items

    @classmethod
    def from_settings(cls, settings: Settings) -> GrammarLimits:
        return cls(settings.data_max_logic_depth, settings.data_max_select_items)


def parse_error(message: str, details: str | None = None, hint: str | None = None) -> ApiError:
    return ApiError(400, "PGRST100", message, details=details, hint=hint)


@dataclass(frozen=True)
class Condition:
    column: str
    operator: str
    value: str | tuple[str, ...]
    negated: bool = False
    language: str | None = None  # full-text operators only: fts(english)


@dataclass(frozen=True)
class Logic:
    operator: str  # "and" | "or"
    items: tuple[Condition | Logic, ...]
    negated: bool = False


@dataclass(frozen=True)
class OrderTerm:
    column: str
    descending: bool = False
    nulls: str | None = None  # "first" | "last"


@dataclass(frozen=True)
class SelectItem:
    column: str  # "*" for all columns
    alias: str | None = None


@dataclass
class QueryParams:
    select: list[SelectItem] = field(default_factory=lambda: [SelectItem("*")])
    where: Logic = field(default_factory=lambda: Logic("and", ()))
    order: list[OrderTerm] = field(default_factory=list)
    limit: int | None = None
    offset: int | None = None
    columns: tuple[str, ...] | None = None   # POST/PATCH: the payload keys to take
    on_conflict: tuple[str, ...] | None = None  # POST upsert: the conflict target

    @property
    def has_filters(self) -> bool:
        return bool(self.where.items)

    def columns_referenced(self) -> Iterable[str]:
        yield from (s.column for s in self.select if s.column != "*")
        yield from (o.column for o in self.order)
        yield from _condition_columns(self.where)


def _condition_columns(node: Condition | Logic) -> Iterable[str]:
    if isinstance(node, Condition):
        yield node.column
    else:
        for item in node.items:
            yield from _condition_columns(item)


def parse_query(args: Iterable[tuple[str, str]], limits: GrammarLimits = GrammarLimits()) -> QueryParams:
    """Parse the query string's (key, value) pairs, in order."""
    query = QueryParams()
    conditions: list[Condition | Logic] = []
    for key, value in args:
        if "\x00" in key or "\x00" in value:
            raise parse_error("NUL bytes are not allowed in the query string", f"parameter {key[:64]!r}")
        if key == "select":
            query.select = parse_select(value, limits.max_select_items)
        elif key == "order":
            query.order = parse_order(value)
        elif key in ("limit", "offset"):
            setattr(query, key, parse_non_negative(key, value))
        elif key in ("or", "and", "not.or", "not.and"):
            negated = key.startswith("not.")
            operator = key.removeprefix("not.")
            if not (value.startswith("(") and value.endswith(")")):
                raise parse_error(f"failed to parse logic tree ({value[:200]})", f"'{key}' takes a parenthesised list")
            items = _parse_logic_items(value[1:-1], 1, limits.max_logic_depth)
            conditions.append(Logic(operator, tuple(items), negated))
        elif key in ("columns", "on_conflict"):
            setattr(query, key, parse_column_list(key, value))
        else:
            conditions.append(parse_filter(key, value))
    query.where = Logic("and", tuple(conditions))
    return query


def parse_non_negative(name: str, value: str) -> int:
    if not NON_NEGATIVE_RE.fullmatch(value):
        raise parse_error(f"'{name}' must be a non-negative integer", f"got {value[:64]!r}")
    return int(value)


def parse_column_list(name: str, value: str) -> tuple[str, ...]:
    """``a,b`` or ``"a","b"`` (postgrest-py quotes every name)."""
    columns = tuple(_unquote(part.strip()) for part in _split_top_level(value))
    if not all(columns):
        raise parse_error(f"failed to parse '{name}'", f"empty column name in {value[:200]!r}")
    if len(set(columns)) != len(columns):
        raise parse_error(f"'{name}' names a column twice", value[:200])
    return columns


def parse_select(value: str, max_items: int = GrammarLimits.max_select_items) -> list[SelectItem]:
    items = []
    raw_items = _split_top_level(value)
    if len(raw_items) > max_items:
        raise parse_error(f"select lists at most {max_items} items", f"got {len(raw_items)}",
                          hint="APPRUN_DATA_MAX_SELECT_ITEMS sets the limit")
    for raw in raw_items:
        part = raw.strip()
        if not part:
            raise parse_error("failed to parse select parameter", f"empty item in {value!r}")
        if "(" in part or ")" in part:
            raise parse_error("resource embedding is not supported by this gateway", part)
        if "::" in part or "->" in part:
            raise parse_error("casts and JSON paths in select are not supported by this gateway", part)
        alias = None
        if ":" in part:
            alias, part = part.split(":", 1)
            if not ALIAS_RE.match(alias):
                raise parse_error("failed to parse select parameter", f"invalid alias {alias!r}")
        items.append(SelectItem(part, alias))
    return items


def parse_order(value: str) -> list[OrderTerm]:
    terms = []
    for raw in value.split(","):
        parts = raw.strip().split(".")
        column, modifiers = parts[0], parts[1:]
        if not column:
            raise parse_error("failed to parse order", f"empty column in {value!r}")
        descending, nulls = False, None
        for modifier in modifiers:
            if modifier in ("asc", "desc"):
                descending = modifier == "desc"
            elif modifier in ("nullsfirst", "nullslast"):
                nulls = modifier.removeprefix("nulls")
            else:
                raise parse_error("failed to parse order", f"unknown modifier {modifier!r} in {raw!r}")
        terms.append(OrderTerm(column, descending, nulls))
    return terms


def parse_filter(column: str, expression: str) -> Condition:
    """``col=[not.]op.value``."""
    negated = False
    rest = expression
    if rest.startswith("not."):
        negated, rest = True, rest[4:]
    language = None
    with_language = FULL_TEXT_RE.match(rest)
    if with_language:
        operator, language, value, dot = *with_language.groups(), "."
        if not LANGUAGE_RE.match(language):
            raise parse_error(f"failed to parse filter ({expression[:200]})",
                              f"{language[:64]!r} is not a text search configuration name")
    else:
        operator, dot, value = rest.partition(".")
    if not dot or operator not in OPERATORS:
        raise parse_error(
            f"failed to parse filter ({expression[:200]})",
            f"unknown or missing operator; expected one of {sorted(OPERATORS)}",
        )
    return Condition(column, operator, _parse_value(operator, value, expression), negated, language)


def _parse_value(operator: str, value: str, expression: str) -> str | tuple[str, ...]:
    if operator == "in":
        if not (value.startswith("(") and value.endswith(")")):
            raise parse_error(f"failed to parse filter ({expression})", "in. takes a list like in.(a,b)")
        inner = value[1:-1]
        return tuple(_unquote(v) for v in _split_top_level(inner)) if inner else ()
    if operator == "is":
        if value.lower() not in IS_VALUES:
            raise parse_error(f"failed to parse filter ({expression})", f"is. takes one of {sorted(IS_VALUES)}")
        return value.lower()
    return value


def _parse_logic_items(text: str, depth: int, max_depth: int) -> list[Condition | Logic]:
    if depth > max_depth:
        raise parse_error(f"logic trees nest at most {max_depth} levels deep",
                          hint="APPRUN_DATA_MAX_LOGIC_DEPTH sets the limit")
    items: list[Condition | Logic] = []
    for raw in _split_top_level(text):
        part = raw.strip()
        negated = False
        if part.startswith("not.") and (part[4:].startswith("or(") or part[4:].startswith("and(")):
            negated, part = True, part[4:]
        for operator in ("or", "and"):
            if part.startswith(operator + "(") and part.endswith(")"):
                inner = _parse_logic_items(part[len(operator) + 1:-1], depth + 1, max_depth)
                items.append(Logic(operator, tuple(inner), negated))
                break
        else:
            column, dot, expression = part.partition(".")
            if not dot or not column:
                raise parse_error(f"failed to parse logic tree ({text})", f"bad item {part!r}")
            condition = parse_filter(column, expression)
            if isinstance(condition.value, str):
                condition = Condition(condition.column, condition.operator, _unquote(condition.value),
                                      condition.negated, condition.language)
            items.append(condition)
    if not items:
        raise parse_error("failed to parse logic tree", "empty list")
    return items


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are outside parentheses and double quotes."""
    parts, depth, quoted, current = [], 0, False, []
    escape = False
    for char in text:
        if escape:
            current.append(char)
            escape = False
            continue
        if char == "\\" and quoted:
            current.append(char)
            escape = True
            continue
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
            if depth < 0:
                raise parse_error("unbalanced parentheses", text)
        if char == "," and depth == 0 and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0 or quoted:
        raise parse_error("unbalanced parentheses or quotes", text)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    value = value.strip() if not value.startswith('"') else value
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value
