"""429 answers in the personas: a request over its tenant's budget was not
executed, so it is never a correctness violation (isolation, RBAC, lost
write, workflow).  For a quiet tenant it is a failure (the gate counts it
in quiet_429 as well); for the noisy profile's bursting tenant it is
expected: no failure, counted in noisy_429 (kpi/tenants.py)."""
from __future__ import annotations

from typing import Any

TOO_MANY_REQUESTS = 429


def over_budget(response: Any, what: str) -> bool:
    """True (and the request failed, no violation counted) for a 429."""
    if response.status_code != TOO_MANY_REQUESTS:
        return False
    response.failure(f"{what}: 429, over the tenant's budget")
    return True


class ExpectedRefusals:
    """Stands in for a user's request event (``client.request_event``): a
    429 answer is reported as no failure; the gate still counts it, per
    tenant, from its status."""

    def __init__(self, request_event: Any) -> None:
        self._event = request_event

    def fire(self, **request_meta: Any) -> None:
        if getattr(request_meta.get("response"), "status_code", None) == TOO_MANY_REQUESTS:
            request_meta["exception"] = None
        self._event.fire(**request_meta)
