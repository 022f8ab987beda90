"""Sends that keep their schedule whatever the answers take: an arrival
rate, as k6's constant-arrival-rate executor keeps with its pool of VUs.

A Locust user runs one task at a time, so a user whose answers take a
second sends at most one request a second, whatever its schedule
(kpi/pacing.py) asks: its catch-up can only send the overdue requests one
after another.  The noisy profile's burst users meet exactly that: the
gateway holds the bursting tenant's spinning calls up to a second for its
one WASM slot, so on a day the machine was fast (its spins ended sooner and
were waited for rather than refused) the burst reached 2x its rate instead
of the 4x asked, and stalled users that caught up together sent it in
waves.  A user with this mixin starts each task in a greenlet of its own
on the schedule and goes on; at most ``max_in_flight`` are in flight (a
cap, as k6's maxVUs: a send due while all are busy waits for one, and the
schedule's catch-up sends it late).  Each request's latency still counts
from when it was due.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gevent
from gevent.pool import Pool
from locust.exception import RescheduleTask, RescheduleTaskImmediately, StopTest, StopUser

from kpi.pacing import DUE_AT

log = logging.getLogger("apprun.arrival")

#: Per user: at the personas' 5 requests per second this covers answers of
#: up to ~3 s (a spinning call's 2 s ceiling after a 1 s wait for its slot).
MAX_IN_FLIGHT = 16


class ArrivalRateSends:
    """Mixin for a scheduled user (``self.schedule``: kpi.pacing.OpenSchedule):
    each task runs in its own greenlet; the user does not wait for it."""

    max_in_flight = MAX_IN_FLIGHT
    # FastHttpUser's connections per user: one per request in flight, or the
    # client would queue the sends on its own pool.
    concurrency = MAX_IN_FLIGHT
    # A send is counted as the task that starts it returns (kpi.pacing's
    # dropped iterations): none is ever in flight in the schedule's sense.
    waits_for_answers = False

    def on_start(self) -> None:
        self._in_flight = Pool(self.max_in_flight)
        self._due_of: dict[gevent.Greenlet, float] = {}
        super().on_start()  # type: ignore[misc]

    def send_without_waiting(self, action: Callable[[Any], None]) -> None:
        """Start ``action(self)`` now, due when the schedule says."""
        due = self.schedule.current_due  # type: ignore[attr-defined]
        self._in_flight.wait_available()
        greenlet = gevent.Greenlet(self._run_sent, action)
        self._due_of[greenlet] = due
        self._in_flight.start(greenlet)

    def _run_sent(self, action: Callable[[Any], None]) -> None:
        # What Locust's task loop does with a task's exception, for a task
        # that runs outside it: a reschedule ends only this task; StopUser
        # and StopTest stop the user (in its own greenlet, where Locust
        # expects them); any other error is reported, and stops the user
        # too when the run does not catch exceptions (--stop-on-exception).
        try:
            action(self)
        except (RescheduleTask, RescheduleTaskImmediately):
            pass
        except (StopUser, StopTest) as stop:
            self.greenlet.kill(stop, block=False)  # type: ignore[attr-defined]
        except Exception as error:
            self.environment.events.user_error.fire(  # type: ignore[attr-defined]
                user_instance=self, exception=error, tb=error.__traceback__)
            log.exception("%s in a sent task", type(error).__name__)
            if not self.environment.catch_exceptions:  # type: ignore[attr-defined]
                self.greenlet.kill(error, block=False)  # type: ignore[attr-defined]
        finally:
            self._due_of.pop(gevent.getcurrent(), None)

    def context(self) -> dict:
        """The request's due time is its send's, not the schedule's now."""
        context = super().context()  # type: ignore[misc]
        due = self._due_of.get(gevent.getcurrent())
        return {**context, DUE_AT: due} if due is not None else context

    def on_stop(self) -> None:
        # The user is stopped (the burst ended): its requests in flight end
        # with it, unrecorded, as a client that goes away.
        self._in_flight.kill(block=False)
        super().on_stop()  # type: ignore[misc]


def sent_without_waiting(action: Callable[[Any], None]) -> Callable[[Any], None]:
    """A task of an ``ArrivalRateSends`` user that starts ``action`` and returns."""
    def send(user: ArrivalRateSends) -> None:
        user.send_without_waiting(action)
    send.__name__ = action.__name__
    send.__qualname__ = f"sent_without_waiting({action.__qualname__})"
    return send
