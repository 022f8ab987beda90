"""The open model's schedule and latency (kpi/pacing.py): wrk2-style sends
on a fixed schedule, latency from the due time, dropped iterations."""
from __future__ import annotations

import pytest

from kpi.collector import Collector
from kpi.evaluate import evaluate
from kpi.pacing import OpenSchedule, latency_from_due
from kpi.thresholds import parse


def test_on_time_responses_wait_for_the_next_due_time() -> None:
    schedule = OpenSchedule(rate=5, t0=100.0)
    assert schedule.current_due == 100.0
    assert schedule.next_wait(now=100.01) == pytest.approx(0.19)      # request 1 due at 100.2
    assert schedule.current_due == pytest.approx(100.2)


def test_a_late_user_catches_up_and_keeps_the_schedule() -> None:
    """A 3 s response: the next 15 sends are overdue and go out at once,
    each measured from its own due time, not from when it was sent."""
    schedule = OpenSchedule(rate=5, t0=100.0)
    assert schedule.next_wait(now=103.0) == 0.0                         # the first response took 3 s
    dues, waits = [], []
    for _ in range(15):
        dues.append(schedule.current_due)
        waits.append(schedule.next_wait(now=103.0))
    assert dues[0] == pytest.approx(100.2) and dues[-1] == pytest.approx(103.0)
    assert waits[:-1] == [0.0] * 14 and waits[-1] == pytest.approx(0.2)   # back on schedule


def test_latency_counts_from_the_due_time() -> None:
    assert latency_from_due(100.2, start_time=103.0, response_time_ms=4.0) == pytest.approx(2804.0)
    assert latency_from_due(None, 103.0, 4.0) is None                    # not scheduled (the login)
    assert latency_from_due(103.0, 102.9999, 4.0) == 4.0                  # never below the service time


def test_dropped_iterations_are_the_due_sends_never_started() -> None:
    schedule = OpenSchedule(rate=5, t0=100.0)
    assert schedule.dropped(now=100.1) == 0                              # request 0 is in flight
    schedule.next_wait(now=100.05)                                       # waiting for 100.2
    assert schedule.dropped(now=100.1) == 0
    assert schedule.dropped(now=101.0) == 4                              # 0..5 due, 0 done, 1 in flight
    assert schedule.dropped(now=99.0) == 0


def test_a_user_that_does_not_wait_for_answers_has_no_send_in_flight_to_discount() -> None:
    """An arrival-rate user (locustfiles/arrival.py) counts a send in
    ``done`` as soon as it starts it: stopped while a due send waited for a
    free slot, that send was never sent."""
    schedule = OpenSchedule(rate=5, t0=100.0)
    for now in (100.0, 100.2, 100.4):                                    # sends 0..2 started
        schedule.next_wait(now=now)
    assert schedule.dropped(now=101.0, waits_for_answers=False) == 3     # 0..5 due, 3 started
    assert schedule.dropped(now=101.0) == 2                              # a closed loop: send 3 in flight
    assert schedule.dropped(now=100.5, waits_for_answers=False) == 0     # waiting for send 3's due time


def test_a_stall_shows_in_the_latency_and_not_in_the_service_time() -> None:
    """A closed loop sees one slow sample per user; the due-time latency
    sees every send the stall delayed."""
    collector = Collector()
    schedule = OpenSchedule(rate=10, t0=0.0)
    now = 0.0
    for _ in range(200):            # 20 s at 10/s; the server stalls 3 s at t = 10
        start = max(now, schedule.current_due)
        service_ms = 3000.0 if 10.0 <= start < 10.1 else 5.0
        end = start + service_ms / 1000
        collector.request(int(end), "GET", "/x", service_ms, False,
                          latency_from_due(schedule.current_due, start, service_ms))
        now = end
        schedule.next_wait(now)
    thresholds = parse({"metrics": {"http_req_duration": ["p(95) < 100"], "http_req_latency": ["p(95) < 100"]}})
    duration, latency = evaluate(collector.snapshot(0, 30), thresholds)
    assert duration.passed and duration.measured == pytest.approx(5, rel=0.01)
    assert not latency.passed and latency.measured > 1000


def test_every_timing_is_read_back_within_one_percent() -> None:
    from kpi.histogram import MAX_RELATIVE_ERROR, bucket, bucket_value

    assert MAX_RELATIVE_ERROR < 0.01
    for value in (0.004, 0.3, 1.0, 3.4, 17.77, 250.0, 3000.0, 59999.0):
        assert bucket_value(bucket(value)) == pytest.approx(value, rel=0.01)
    assert bucket_value(bucket(0.0)) == 0.0


def test_percentiles_on_too_few_samples_are_marked_low_confidence() -> None:
    collector = Collector()
    for i in range(300):
        collector.request(5, "GET", "/x", 1 + i % 10, False)
    thresholds = parse({"metrics": {"http_req_duration": ["p(99) < 100", "p(95) < 100", "med < 100",
                                                          "max < 100"]}})
    p99, p95, median, maximum = evaluate(collector.snapshot(0, 10), thresholds)
    assert p99.note == "low confidence: 300 samples, p(99) wants 1000"
    assert p95.note == median.note == maximum.note == ""
