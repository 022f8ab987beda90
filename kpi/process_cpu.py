"""CPU time of process trees, to the nanosecond where Linux allows it.

``psutil``'s ``cpu_times()`` reads ``/proc/<pid>/stat``, whose user and
system times count in clock ticks (10 ms here).  A short benchmark window
then reads 0 or 10 ms for 30 list reads that cost PostgreSQL 9 ms: too
coarse for ``bench/cost.py --requests 30``.  Each thread's
``/proc/<pid>/task/<tid>/schedstat`` gives its time on CPU in nanoseconds
(user and system together), so a reading here is a map from one thread
(or one process's reaped children) to its CPU seconds, and the difference
of two readings is taken thread by thread:

- a thread in both readings counts what it spent in between;
- a thread that started in the window counts all of its time;
- a thread that ended in the window is not in the second reading, and its
  last moments are lost rather than its whole life subtracted.

Children a process has already reaped (PostgreSQL backends that ended,
supervised gateway workers) are only known in clock ticks, as
``children_user + children_system``.  Where ``schedstat`` cannot be read
(a kernel without ``CONFIG_SCHED_INFO``), the process's tick figures are
used instead.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import psutil

NANOSECONDS = 1e9
# One thread or one process's reaped children: (pid, tid) or (pid, "reaped"),
# (pid, "ticks") when the process's threads could not be read.
TaskKey = tuple[int, int | str]
TreeReading = dict[TaskKey, float]


def _thread_seconds(pid: int) -> dict[TaskKey, float] | None:
    """CPU seconds of each live thread of ``pid``; None if schedstat is unreadable."""
    threads: dict[TaskKey, float] = {}
    try:
        task_dirs = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    for task_dir in task_dirs:
        try:
            on_cpu_ns = (task_dir / "schedstat").read_text().split()[0]
        except (OSError, IndexError):
            continue  # the thread ended between listing and reading
        threads[(pid, int(task_dir.name))] = int(on_cpu_ns) / NANOSECONDS
    return threads or None


def process_reading(proc: psutil.Process) -> TreeReading:
    """One process: its threads (or its tick total) and its reaped children."""
    times = proc.cpu_times()  # raises NoSuchProcess if it is gone
    reading: TreeReading = {(proc.pid, "reaped"): times.children_user + times.children_system}
    threads = _thread_seconds(proc.pid)
    if threads is None:
        reading[(proc.pid, "ticks")] = times.user + times.system
    else:
        reading.update(threads)
    return reading


def tree_reading(root_pid: int) -> TreeReading:
    """A process and all its descendants, thread by thread."""
    try:
        root = psutil.Process(root_pid)
        processes = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return {}
    reading: TreeReading = {}
    for proc in processes:
        try:
            reading.update(process_reading(proc))
        except psutil.NoSuchProcess:
            continue
    return reading


def cpu_snapshot(components: Mapping[str, Iterable[int]]) -> dict[str, TreeReading]:
    """One reading per named component, each the union of its process trees."""
    snapshot: dict[str, TreeReading] = {}
    for name, pids in components.items():
        reading: TreeReading = {}
        for pid in pids:
            reading.update(tree_reading(pid))
        snapshot[name] = reading
    return snapshot


def reading_difference(before: TreeReading, after: TreeReading) -> float:
    """CPU seconds spent between two readings of the same tree, thread by thread."""
    return sum(max(0.0, seconds - before.get(key, 0.0)) for key, seconds in after.items())


def cpu_difference(before: Mapping[str, TreeReading], after: Mapping[str, TreeReading]) -> dict[str, float]:
    """CPU seconds each component spent between two snapshots."""
    return {name: reading_difference(before[name], after.get(name, {})) for name in before}
