"""bench/workflow_bench.py's polling: a gateway with budgets may answer a
status poll with 429; the bench waits as told instead of dying on the body."""
from __future__ import annotations

from typing import Any

import pytest

from bench import workflow_bench


class FakeResponse:
    def __init__(self, status_code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self.status_code = status_code
        self._body = body
        self.headers = headers or {}
        self.text = str(body)

    def json(self) -> dict[str, Any]:
        return self._body


class FakeSession:
    def __init__(self, responses: list[FakeResponse]) -> None:
        self.responses = responses
        self.urls: list[str] = []

    def get(self, url: str, timeout: float) -> FakeResponse:
        self.urls.append(url)
        return self.responses.pop(0)


OVER_BUDGET = FakeResponse(429, {"code": "over_budget", "message": "m", "details": {}, "hint": None},
                           {"Retry-After": "2"})


def test_a_refused_poll_waits_as_told_and_polls_again(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(workflow_bench.time, "sleep", slept.append)
    session = FakeSession([OVER_BUDGET, FakeResponse(200, {"status": "running"}),
                           FakeResponse(200, {"status": "completed"})])
    outcome = workflow_bench.wait_all(session, "http://127.0.0.1:1", ["wf-1"])  # type: ignore[arg-type]
    assert outcome == {"wf-1": {"status": "completed"}}
    assert slept[0] == 2.0 and len(session.urls) == 3


def test_any_other_error_stops_the_bench_with_its_status(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workflow_bench.time, "sleep", lambda _s: None)
    session = FakeSession([FakeResponse(503, {"code": "temporal_unavailable"})])
    with pytest.raises(RuntimeError, match="HTTP 503"):
        workflow_bench.wait_all(session, "http://127.0.0.1:1", ["wf-1"])  # type: ignore[arg-type]
