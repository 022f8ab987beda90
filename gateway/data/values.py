"""Column values from a JSON body, checked before they reach SQL.

json.loads accepts NaN and Infinity, which are not JSON and which a numeric
CHECK such as ``price >= 0`` lets through (NaN compares greater than every
number in PostgreSQL); psycopg2 cannot send a string holding a NUL byte
(ValueError, which would be a 500).  Both are the caller's mistake: 400.
"""
from __future__ import annotations

import math
from typing import Any

from gateway.errors import ApiError


def check_value(column: str, value: Any) -> None:
    """Refuse non-finite numbers and NUL characters anywhere in ``value``
    (nested objects and arrays too; walked without recursion)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ApiError(400, "PGRST102", f"column '{column}': NaN and Infinity are not valid JSON numbers")
        if isinstance(item, str) and "\x00" in item:
            raise ApiError(400, "PGRST102", f"column '{column}': strings cannot contain NUL (\\u0000) characters")
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
