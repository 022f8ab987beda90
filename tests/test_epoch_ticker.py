"""The WASM epoch ticker advances the epoch only while a call runs
(gateway/functions/runtime.py): idle, it costs no wake-ups."""
from __future__ import annotations

import time

from gateway.functions.runtime import EpochTicker


class CountingEngine:
    def __init__(self) -> None:
        self.ticks = 0

    def increment_epoch(self) -> None:
        self.ticks += 1


def test_the_ticker_ticks_only_while_a_call_runs() -> None:
    engine = CountingEngine()
    ticker = EpochTicker(engine, tick_ms=2)  # type: ignore[arg-type]
    try:
        time.sleep(0.1)
        assert engine.ticks == 0
        with ticker.running():
            with ticker.running():  # a second call at once
                time.sleep(0.05)
            time.sleep(0.05)
        during = engine.ticks
        assert during >= 5
        time.sleep(0.1)
        assert engine.ticks <= during + 1  # at most the tick already under way
    finally:
        ticker.stop()


def wait_until(condition, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_the_ticker_lingers_after_the_last_call_then_parks() -> None:
    """With a linger, ticks go on after the last call ends (a call that
    follows soon finds the ticker awake) and stop once the linger is over."""
    engine = CountingEngine()
    now = [0.0]
    ticker = EpochTicker(engine, tick_ms=2, linger_s=10.0, clock=lambda: now[0])  # type: ignore[arg-type]
    try:
        with ticker.running():
            pass
        seen = engine.ticks
        assert wait_until(lambda: engine.ticks >= seen + 5), "no ticks within the linger"
        now[0] = 10.0                                   # the linger is over
        assert wait_until(lambda: ticker.parked), "the ticker did not park"
        parked_at = engine.ticks
        time.sleep(0.05)
        assert engine.ticks <= parked_at + 1
        with ticker.running():                          # a new call wakes it
            assert wait_until(lambda: engine.ticks >= parked_at + 3)
    finally:
        ticker.stop()
