"""A function's limits: what a deploy may ask for, and how one memory budget
is split between linear memory and tables in a wasmtime store.

``memory_bytes`` bounds everything a call can make the gateway allocate:
wasmtime's store limiter caps linear memory and table elements separately,
so the budget reserves a slice for tables (``TABLE_SLOTS`` tables of at
most ``table_elements`` each) and gives the rest to linear memory.  Without
a table cap one ``table.grow`` could allocate gigabytes under a 16 MiB limit.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from gateway.errors import ApiError

#: wasmtime's Store.set_limits: "each table element takes 8 bytes".
TABLE_ELEMENT_BYTES = 8
#: Tables a store may create; toolchains emit one (the indirect call table).
TABLE_SLOTS = 4
#: Tables may take at most this fraction of a small memory budget.
TABLE_SHARE_DIVISOR = 4
LIMIT_PARAMS = ("fuel", "memory_bytes", "timeout_ms")
# ASCII digits only: str.isdigit() accepts '²' and '٣', which int() refuses,
# and 18 digits keep every value inside an i64 and far from int()'s
# 4,300-digit guard.
_LIMIT_VALUE = re.compile(r"[0-9]{1,18}", re.ASCII)


@dataclass(frozen=True)
class Limits:
    fuel: int
    memory_bytes: int
    timeout_ms: int

    def to_json(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class StoreBudget:
    """The wasmtime store limits that keep one call inside ``memory_bytes``."""

    memory_size: int
    table_elements: int
    tables: int = TABLE_SLOTS
    memories: int = 1
    instances: int = 1

    def set_on(self, store: Any) -> None:
        store.set_limits(memory_size=self.memory_size, table_elements=self.table_elements,
                         instances=self.instances, tables=self.tables, memories=self.memories)


def store_budget(memory_bytes: int, table_elements_cap: int) -> StoreBudget:
    """Split ``memory_bytes``: tables get up to ``table_elements_cap`` elements
    each (never more than a quarter of the budget), memory gets the rest."""
    per_table_share = memory_bytes // (TABLE_SHARE_DIVISOR * TABLE_SLOTS * TABLE_ELEMENT_BYTES)
    table_elements = max(0, min(table_elements_cap, per_table_share))
    table_bytes = table_elements * TABLE_SLOTS * TABLE_ELEMENT_BYTES
    return StoreBudget(memory_size=memory_bytes - table_bytes, table_elements=table_elements)


def parse_requested_limits(args: Mapping[str, str]) -> dict[str, int]:
    """``?fuel=&memory_bytes=&timeout_ms=`` as integers; 400 for anything
    else (unknown keys, signs, non-ASCII digits, NUL, over-long values)."""
    requested: dict[str, int] = {}
    for key, value in args.items():
        if key not in LIMIT_PARAMS:
            raise ApiError(400, "invalid_limits", f"unknown query parameter {key[:64]!r}",
                           hint=f"limits: {', '.join(LIMIT_PARAMS)}")
        if not _LIMIT_VALUE.fullmatch(value):
            raise ApiError(400, "invalid_limits", f"limit '{key}' must be a positive integer (ASCII digits, "
                                                  "at most 18)")
        requested[key] = int(value)
    return requested


def resolve_limits(requested: Mapping[str, Any], defaults: Limits, ceilings: Limits) -> Limits:
    values = defaults.to_json()
    unknown = set(requested) - set(values)
    if unknown:
        raise ApiError(400, "invalid_limits", f"unknown limit(s): {', '.join(sorted(unknown))}",
                       hint=f"known: {', '.join(values)}")
    for name, ceiling in ceilings.to_json().items():
        if name not in requested:
            continue
        value = requested[name]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ApiError(400, "invalid_limits", f"limit '{name}' must be a positive integer")
        if value > ceiling:
            raise ApiError(400, "invalid_limits", f"limit '{name}' = {value} is above the ceiling {ceiling}")
        values[name] = value
    return Limits(**values)
