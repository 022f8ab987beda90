"""Memory and CPU of the system under test, sampled over the run.

Embedded stack: psutil over the whole process tree of every service PID in
``stack.json`` (gateway, worker, PostgreSQL, Temporal).  Memory is the
proportional set size (PSS: each shared page split among the processes that
map it), so PostgreSQL's shared buffers count once, not once per backend.
Summing RSS instead reported 457 MB for a PostgreSQL whose PSS was 74 MB
(30 backends, measured under load).  Where PSS cannot be read (not Linux,
no permission) the process's RSS is used.  Remote target:
``process_resident_memory_bytes`` and ``process_cpu_seconds_total`` from its
``/metrics`` (that gateway process only; the report says so).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil
import requests
from prometheus_client.parser import text_string_to_metric_families

MB = 1024 * 1024


@dataclass
class ResourceSample:
    t: float
    memory_mb: dict[str, float]
    cpu_percent: dict[str, float]

    @property
    def total_memory_mb(self) -> float:
        return sum(self.memory_mb.values())

    @property
    def total_cpu_percent(self) -> float:
        return sum(self.cpu_percent.values())


def summarize_by_component(samples: list[ResourceSample], cpus: int) -> dict[str, dict[str, float]]:
    """Per component and in total: average CPU in both readings (% of the
    whole machine, as sut_cpu_percent; cores, as docker stats and
    sut_cpu_cores) and peak memory, so the report says which service the
    totals come from."""
    summary: dict[str, dict[str, float]] = {}

    def summarize(cpu: list[float], memory: list[float]) -> dict[str, float]:
        average = sum(cpu) / len(cpu) if cpu else 0.0       # % of one core, summed over the tree
        return {"cpu_avg_percent": round(average / max(1, cpus), 1), "cpu_avg_cores": round(average / 100, 3),
                "memory_max_mb": round(max(memory), 1) if memory else 0.0}

    for name in sorted({name for s in samples for name in s.memory_mb}):
        summary[name] = summarize([s.cpu_percent[name] for s in samples if name in s.cpu_percent],
                                  [s.memory_mb[name] for s in samples if name in s.memory_mb])
    if summary:
        summary["total"] = summarize([s.total_cpu_percent for s in samples], [s.total_memory_mb for s in samples])
    return summary


def proportional_set_size(proc: psutil.Process) -> int:
    """PSS in bytes from /proc/<pid>/smaps_rollup (cheap: one summary, not
    every mapping); RSS when that file is unavailable."""
    try:
        with open(f"/proc/{proc.pid}/smaps_rollup", "rb") as rollup:
            for line in rollup:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return proc.memory_info().rss


def descendant_pids(pid: int) -> list[int]:
    """Every descendant of ``pid``, from each thread's
    ``/proc/<pid>/task/<tid>/children`` (a child belongs to the thread that
    forked it): a few small reads per process.  psutil's
    ``children(recursive=True)`` reads the stat file of every process on the
    machine instead, which was 9 of the sampler's 23 ms per sample (idle
    stack, 14 processes).  The file lists the children that exist when it is
    read, which is all a sample needs."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            tasks = list(os.scandir(f"/proc/{parent}/task"))
        except FileNotFoundError:  # ended since its parent listed it (a PostgreSQL backend)
            continue
        for task in tasks:
            try:
                with open(f"{task.path}/children", "rb") as children:
                    kids = [int(child) for child in children.read().split()]
            except (FileNotFoundError, ProcessLookupError):  # the thread ended meanwhile
                continue
            found.extend(kids)
            pending.extend(kids)
    return found


def _children_file_available() -> bool:
    return os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


class ProcessTreeSampler:
    def __init__(self, pids: dict[str, int]) -> None:
        self._roots = {}
        for name, pid in pids.items():
            try:
                self._roots[name] = psutil.Process(pid)
            except psutil.Error:
                continue
        self._known: dict[int, psutil.Process] = {}
        self._children_file = _children_file_available()
        self.samples: list[ResourceSample] = []
        self.sample()  # primes cpu_percent

    def _tree(self, root: psutil.Process) -> list[psutil.Process]:
        try:
            if self._children_file:
                members = [root] + [proc for pid in descendant_pids(root.pid) if (proc := self._process(pid))]
            else:  # no /proc/<pid>/task/<tid>/children (kernel without CONFIG_PROC_CHILDREN)
                members = [root] + root.children(recursive=True)
        except (psutil.Error, OSError):  # the root itself is gone
            return []
        # Keep the same Process objects so cpu_percent() measures since the last call.
        return [self._known.setdefault(p.pid, p) for p in members]

    def _process(self, pid: int) -> psutil.Process | None:
        known = self._known.get(pid)
        if known is not None:
            return known
        try:
            return psutil.Process(pid)
        except psutil.Error:  # ended between the listing and now
            return None

    def sample(self) -> ResourceSample:
        memory: dict[str, float] = {}
        cpu: dict[str, float] = {}
        for name, root in self._roots.items():
            mem_total = cpu_total = 0.0
            for proc in self._tree(root):
                try:
                    mem_total += proportional_set_size(proc) / MB
                    cpu_total += proc.cpu_percent(None)
                except psutil.Error:
                    continue
            memory[name], cpu[name] = round(mem_total, 1), round(cpu_total, 1)
        sample = ResourceSample(time.time(), memory, cpu)
        self.samples.append(sample)
        return sample


class MetricsEndpointSampler:
    def __init__(self, host: str) -> None:
        self._url = host.rstrip("/") + "/metrics"
        self._last: tuple[float, float] | None = None
        self.samples: list[ResourceSample] = []

    def sample(self) -> ResourceSample | None:
        try:
            text = requests.get(self._url, timeout=2).text
        except requests.RequestException:
            return None
        values = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name in ("process_resident_memory_bytes", "process_cpu_seconds_total"):
                    values[s.name] = s.value
        if "process_resident_memory_bytes" not in values:
            return None
        now = time.time()
        cpu = 0.0
        if self._last and "process_cpu_seconds_total" in values:
            cpu = 100 * (values["process_cpu_seconds_total"] - self._last[1]) / max(1e-6, now - self._last[0])
        self._last = (now, values.get("process_cpu_seconds_total", 0.0))
        sample = ResourceSample(now, {"gateway": values["process_resident_memory_bytes"] / MB}, {"gateway": cpu})
        self.samples.append(sample)
        return sample
