"""Read plans: what a ``GET /data/<table>`` request turns into before it
reaches the database, remembered by the request's exact text.

Parsing the query string, the ``Prefer``, ``Accept`` and ``Range`` headers
and building the SQL is the data read's largest Python cost after Flask
itself, and a client repeats the same few requests (the kpi mix sends a
handful of shapes), so the result is kept by (table, query string, Prefer,
Accept, Range).  A plan depends on nothing else: the catalog is read once
per process, the limits are settings, and the caller's claims are not in it
(they travel separately, set in the statement's own transaction, so
row-level security still decides per request what the SQL sees).  Bad input
raises before a plan exists, so refusals are never cached and are answered
exactly as before.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.data.grammar import QueryParams
from gateway.data.negotiation import ResponseFormat

# Distinct request texts kept per process; beyond that the cache starts
# over (an attacker's unique query strings cost a parse each, as without it).
PLAN_CACHE_SIZE = 1024

PlanKey = tuple[str, str, str | None, str | None, str | None]


@dataclass(frozen=True)
class ReadPlan:
    sql: str
    params: tuple[Any, ...]
    offset: int
    fmt: ResponseFormat
    count_preference: str | None  # Prefer: count=... when a total is wanted
    query: QueryParams            # for the CSV header; never mutated after parsing


class PlanCache:
    """A bounded map from request text to plan.  Single dict operations are
    atomic under the GIL, and two greenlets building the same plan at once
    only do the work twice."""

    def __init__(self, size: int = PLAN_CACHE_SIZE) -> None:
        self._size = size
        self._plans: dict[PlanKey, ReadPlan] = {}

    def get(self, key: PlanKey) -> ReadPlan | None:
        return self._plans.get(key)

    def put(self, key: PlanKey, plan: ReadPlan) -> None:
        if len(self._plans) >= self._size:
            self._plans.clear()
        self._plans[key] = plan

    def __len__(self) -> int:
        return len(self._plans)
