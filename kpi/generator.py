"""The load generator measures itself, on every Locust process (master,
workers, or the local runner), into the collector's gauges (shipped to the
master with the rest): its CPU each second and its event loop's lag.  The
master also samples the whole machine's CPU.  kpi/validity.py judges them.

The lag probe is a greenlet that sleeps a fixed 10 ms and records how late
it wakes: when the loop is busy (a saturated process, or a process starved
of CPU by the machine), every simulated user's timing is late by as much.
"""
from __future__ import annotations

import os
import time

import gevent
import psutil

from kpi.hooks import collector
from kpi.validity import GENERATOR_CPU, GENERATOR_LAG, MACHINE_CPU

LAG_PROBE_S = 0.010
CPU_EVERY_S = 1.0


def _probe_lag(key: str) -> None:
    while True:
        started = time.perf_counter()
        gevent.sleep(LAG_PROBE_S)
        late_ms = max(0.0, (time.perf_counter() - started - LAG_PROBE_S) * 1000)
        collector.gauge(int(time.time()), key, late_ms)


def _sample_cpu(key: str, with_machine: bool) -> None:
    process = psutil.Process(os.getpid())
    process.cpu_percent(None)           # primes: the next calls measure since the last
    if with_machine:
        psutil.cpu_percent(None)
    while True:
        gevent.sleep(CPU_EVERY_S)
        second = int(time.time())
        collector.gauge(second, key, process.cpu_percent(None))
        if with_machine:
            collector.gauge(second, MACHINE_CPU, psutil.cpu_percent(None))


def start(role: str, with_machine: bool) -> list[gevent.Greenlet]:
    """Probe this process for its lifetime (the judged window picks the
    seconds that count).  ``role``: "master", "worker" or "local"."""
    where = f"{role} pid {os.getpid()}"
    return [gevent.spawn(_probe_lag, f"{GENERATOR_LAG}|{where}"),
            gevent.spawn(_sample_cpu, f"{GENERATOR_CPU}|{where}", with_machine)]
