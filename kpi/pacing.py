"""The personas' pacing: an open model on a fixed schedule, as wrk2 does.

Each simulated user's k-th request is due at ``t0 + k / rate``.  A user
whose response came late does not wait a full interval: it sends the
overdue requests at once and keeps the schedule.  Each request's latency is
measured from when it was due, not from when it was sent (the service
time, Locust's response_time, stays http_req_duration).  A closed loop,
where a user waits for its response before the next interval starts, hides
a stall: the users stop sending while the system stalls, so few samples
show it ("coordinated omission").

Pure; no Locust.  The personas (locustfiles/) use ``OpenSchedule`` as their
wait_time and put ``DUE_AT`` into each request's context; the plugin turns
it into http_req_latency.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

PER_USER_RPS = 5.0           # each simulated user's request rate
DUE_AT = "apprun_due_at"     # request context key: epoch seconds the request was due


@dataclass
class OpenSchedule:
    rate: float              # requests per second
    t0: float                # epoch seconds the first request is due
    done: int = 0            # requests completed (the task that sent each returned)
    waiting_until: float = 0.0

    def __post_init__(self) -> None:
        self.waiting_until = self.t0

    def due(self, k: int) -> float:
        return self.t0 + k / self.rate

    @property
    def current_due(self) -> float:
        """When the request being sent now was due."""
        return self.due(self.done)

    def next_wait(self, now: float) -> float:
        """After a request completed: seconds until the next one is due (0
        when it is already overdue: catch up, keep the schedule)."""
        self.done += 1
        self.waiting_until = self.due(self.done)
        return max(0.0, self.waiting_until - now)

    def dropped(self, now: float, waits_for_answers: bool = True) -> int:
        """Requests due by ``now`` that were never started: at the end of the
        run, the sends the schedule wanted and the system did not let happen.
        A user that waits for its answers has one request in flight unless
        it is still waiting for the next one's due time; a user that does not
        (locustfiles/arrival.py) counts each send in ``done`` as it starts
        it, so a due send not counted there was never sent."""
        if now < self.t0:
            return 0
        due_by_now = math.floor((now - self.t0) * self.rate + 1e-9) + 1
        in_flight = 1 if waits_for_answers and now >= self.waiting_until else 0
        return max(0, due_by_now - self.done - in_flight)


def latency_from_due(due_at: float | None, start_time: float | None, response_time_ms: float) -> float | None:
    """Milliseconds from when a request was due to when its response ended;
    None without a due time.  Never below the service time (clock steps)."""
    if due_at is None or start_time is None:
        return None
    return max(response_time_ms, (start_time - due_at) * 1000 + response_time_ms)
