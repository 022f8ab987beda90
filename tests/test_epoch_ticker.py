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
