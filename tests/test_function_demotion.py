"""Long WASM calls give up their CPU class while they run
(gateway/functions/demotion.py): a spinning call then takes only the CPU
nobody else wants, and the other tenants' requests and short calls are not
slowed by it (issue 13)."""
from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests

from gateway.functions.demotion import LongCallDemotion
from tests.test_function_fairness import TIME_SPIN, deploy, invoke
from tests.test_function_limits import gateway_process
from wasm.build import example_wasm

ROOT = Path(__file__).resolve().parent.parent


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.idle: list[int] = []
        self.normal: list[tuple[int, int]] = []
        self.spent = 0

    def set_idle(self, thread_id: int) -> None:
        self.idle.append(thread_id)

    def set_normal(self, thread_id: int, nice: int) -> None:
        self.normal.append((thread_id, nice))

    def on_spent(self) -> None:
        self.spent += 1


def demotion(clock: FakeClock, recorder: Recorder, **overrides) -> LongCallDemotion:  # type: ignore[no-untyped-def]
    options = {"set_idle": recorder.set_idle, "set_normal": recorder.set_normal, **overrides}
    return LongCallDemotion(0.05, nice=10, on_spent=recorder.on_spent, clock=clock, **options)


def test_only_a_call_past_its_allowance_is_demoted_once_and_restored_when_it_ends() -> None:
    clock, recorder = FakeClock(), Recorder()
    calls = demotion(clock, recorder)
    with calls.call():
        clock.now += 0.049
        calls.demote_overdue()
        assert recorder.idle == []               # within its allowance
        clock.now += 0.002
        calls.demote_overdue()
        calls.demote_overdue()                   # later ticks leave it as it is
        assert recorder.idle == [threading.get_native_id()]
        assert recorder.normal == []             # restored only when the call ends
    assert recorder.normal == [(threading.get_native_id(), 10)]
    assert recorder.spent == 0 and calls.demoted_total == 1


def test_a_short_call_never_changes_class() -> None:
    clock, recorder = FakeClock(), Recorder()
    calls = demotion(clock, recorder)
    with calls.call():
        clock.now += 0.01
        calls.demote_overdue()
    calls.demote_overdue()                       # nothing runs any more
    assert recorder.idle == [] and recorder.normal == [] and calls.demoted_total == 0


def test_a_thread_that_cannot_leave_sched_idle_is_reported_spent(caplog) -> None:
    """Leaving SCHED_IDLE needs CAP_SYS_NICE or RLIMIT_NICE: without them the
    thread asks to be replaced (NativePool retires it), and says why once."""
    clock, recorder = FakeClock(), Recorder()

    def refused(thread_id: int, nice: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    calls = demotion(clock, recorder, set_normal=refused)
    with caplog.at_level(logging.WARNING, logger="gateway.functions.demotion"):
        for _ in range(2):
            with calls.call():
                clock.now += 1
                calls.demote_overdue()
    assert recorder.spent == 2
    assert len([r for r in caplog.records if "cannot leave SCHED_IDLE" in r.getMessage()]) == 1


def test_a_call_that_cannot_be_demoted_runs_on_in_its_class() -> None:
    clock, recorder = FakeClock(), Recorder()

    def refused(thread_id: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    calls = demotion(clock, recorder, set_idle=refused)
    with calls.call():
        clock.now += 1
        calls.demote_overdue()
    assert recorder.normal == [] and recorder.spent == 0 and calls.demoted_total == 0


def test_the_real_scheduler_calls_demote_and_restore_a_thread() -> None:
    """The default set_idle / set_normal against Linux, on a thread of this
    process: SCHED_IDLE while overdue, SCHED_OTHER at the pool's nice after."""
    seen: dict[str, tuple[int, int]] = {}
    start_nice = os.getpriority(os.PRIO_PROCESS, 0)
    nice = max(start_nice, 5)
    clock = FakeClock()
    calls = LongCallDemotion(0.05, nice=nice, on_spent=lambda: seen.setdefault("spent", (0, 0)), clock=clock)

    def on_a_thread() -> None:
        with calls.call():
            clock.now += 1
            calls.demote_overdue()
            seen["during"] = (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0))
        seen["after"] = (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0))

    thread = threading.Thread(target=on_a_thread)
    thread.start()
    thread.join(10)
    assert seen["during"][0] == os.SCHED_IDLE
    if "spent" not in seen:  # this process may leave SCHED_IDLE (root, or RLIMIT_NICE)
        assert seen["after"] == (os.SCHED_OTHER, nice)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # this thread was left alone


def test_a_retired_pool_thread_is_replaced_silently() -> None:
    """NativePool under gevent: a task that calls retire_this_thread() ends
    its thread after the task (gevent's worker hook, checked against the
    pinned gevent), the next task runs on a fresh thread, nothing is
    printed."""
    script = textwrap.dedent("""
        from gevent import monkey; monkey.patch_all()
        from gevent.monkey import get_original
        from gateway.native import NativePool, retire_this_thread
        native_id = get_original("_thread", "get_native_id")
        pool = NativePool(1)
        first = pool.apply(native_id)
        assert pool.apply(native_id) == first          # a thread is reused...
        def retire():
            retire_this_thread()
            return native_id()
        assert pool.apply(retire) == first
        after = [pool.apply(native_id) for _ in range(3)]
        assert first not in after and len(set(after)) == 1, (first, after)   # ...until it retires
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok" and done.stderr == "", done.stderr


def _idle_threads(process: psutil.Process) -> list[int]:
    idle = []
    for thread in process.threads():
        try:
            if os.sched_getscheduler(thread.id) == os.SCHED_IDLE:
                idle.append(thread.id)
        except OSError:  # the thread ended
            pass
    return idle


@pytest.mark.usefixtures("wasm_time_settled")
def test_a_spinning_call_runs_at_sched_idle_and_its_thread_comes_back(running_stack, gateway_url, tokens) -> None:
    """Against the real gateway: while charlie's spinning call runs, its pool
    thread is SCHED_IDLE; once it has ended no gateway thread is, and a short
    call is never moved."""
    gateway = gateway_process(running_stack)
    deploy(gateway_url, tokens["charlie"], "demote-spin", TIME_SPIN, "text/plain", "?fuel=1000000000&timeout_ms=600")
    deploy(gateway_url, tokens["alice"], "demote-add", example_wasm("add"), "application/wasm")
    assert _idle_threads(gateway) == []

    spun: list[requests.Response] = []
    spinner = threading.Thread(target=lambda: spun.append(
        invoke(gateway_url, tokens["charlie"], "demote-spin", {"export": "spin", "args": []})))
    spinner.start()
    seen_idle: list[int] = []
    deadline = time.monotonic() + 5
    while spinner.is_alive() and time.monotonic() < deadline and not seen_idle:
        seen_idle = _idle_threads(gateway)
        time.sleep(0.01)
    spinner.join(30)
    assert spun and spun[0].status_code == 504, spun[0].text if spun else "no answer"
    assert len(seen_idle) == 1, "the spinning call's thread was never moved to SCHED_IDLE"

    short = invoke(gateway_url, tokens["alice"], "demote-add", {"export": "add", "args": [2, 3]})
    assert short.status_code == 200 and short.json() == {"result": 5}
    assert _idle_threads(gateway) == []


def test_a_negative_demotion_allowance_is_refused() -> None:
    from gateway.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="APPRUN_FUNCTION_DEMOTE_AFTER_MS must be 0 .off. or positive"):
        Settings.from_mapping({"function_demote_after_ms": -1}).validate()
    Settings.from_mapping({"function_demote_after_ms": 0}).validate()


def test_without_gevent_an_inline_call_never_demotes_its_caller() -> None:
    """Without gevent a call runs inline on the caller's own thread (a test
    client, a script): that thread is not the pool's to demote."""
    from gateway.functions.abi import FunctionError
    from gateway.functions.runtime import FunctionRuntime, Limits

    limits = Limits(1_000_000_000, 16 * 1024 * 1024, 300)
    runtime = FunctionRuntime(defaults=limits, ceilings=limits, tick_ms=10, threads=1, demote_after_ms=20)
    try:
        _digest, module, _exports = runtime.compile(TIME_SPIN.encode())
        ended: list[str] = []

        def spin() -> None:
            try:
                runtime.invoke(module, limits, {"export": "spin", "args": []}, None)
            except FunctionError as error:
                ended.append(error.code)

        caller = threading.Thread(target=spin)
        caller.start()
        policies = set()
        while caller.is_alive():
            with contextlib.suppress(OSError):  # the thread ended meanwhile
                policies.add(os.sched_getscheduler(caller.native_id))
            time.sleep(0.005)
        caller.join()
    finally:
        runtime.close()
    assert ended == ["function_timeout"]
    assert policies == {os.SCHED_OTHER}
