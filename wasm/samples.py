"""The ``price_tax`` example's sample call: one request body and the answer
it must get.  The load test's personas, the pre-flight and the benchmarks
all send this one, so their figures describe the same call."""
from __future__ import annotations

from typing import Any

PRICE_INPUT: dict[str, Any] = {"items": [{"name": "A", "price_cents": 1000}, {"name": "B", "price_cents": 2599}],
                               "tax_rate_bp": 2000}
PRICE_OUTPUT: dict[str, int] = {"count": 2, "subtotal_cents": 3599, "tax_cents": 720, "total_cents": 4319}
