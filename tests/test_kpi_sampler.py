"""The resource sampler walks the stack's process trees through
/proc/<pid>/task/<tid>/children instead of scanning every process on the
machine (kpi/sampler.py)."""
from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from kpi.sampler import ProcessTreeSampler, descendant_pids

# A child that starts a grandchild from a second thread (its children file is
# the thread's, not the process's) and one from its main thread, then waits.
TREE = r'''
import subprocess, sys, threading, time
SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
kids = []
started = threading.Event()
def from_a_thread():  # stays alive, so its child stays in this thread's children file
    kids.append(subprocess.Popen(SLEEPER)); started.set(); time.sleep(60)
threading.Thread(target=from_a_thread, daemon=True).start(); started.wait()
kids.append(subprocess.Popen(SLEEPER))
print(" ".join(str(k.pid) for k in kids), flush=True)
time.sleep(60)
'''


@pytest.fixture()
def process_tree():
    child = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    try:
        grandchildren = [int(pid) for pid in child.stdout.readline().split()]
        yield child.pid, grandchildren
    finally:
        for proc in psutil.Process(child.pid).children(recursive=True):
            proc.kill()
        child.kill()
        child.wait(10)


def test_descendants_include_children_of_every_thread(process_tree) -> None:
    root, grandchildren = process_tree
    assert len(grandchildren) == 2
    assert sorted(descendant_pids(root)) == sorted(grandchildren)
    assert sorted(descendant_pids(root)) == sorted(p.pid for p in psutil.Process(root).children(recursive=True))


def test_a_sample_covers_the_tree_without_scanning_every_process(process_tree, monkeypatch) -> None:
    root, grandchildren = process_tree

    def scan(*args, **kwargs):
        raise AssertionError("psutil's children() scans every process on the machine")

    sampler = ProcessTreeSampler({"tree": root})
    monkeypatch.setattr(psutil.Process, "children", scan)
    sampler.sample()
    assert set(sampler._known) == {root, *grandchildren}
    alone = ProcessTreeSampler({"one": grandchildren[0]}).sample()
    assert sampler.samples[-1].memory_mb["tree"] > alone.memory_mb["one"] * 2


def test_a_child_that_ended_is_left_out_of_the_sample(process_tree) -> None:
    root, grandchildren = process_tree
    sampler = ProcessTreeSampler({"tree": root})
    psutil.Process(grandchildren[0]).kill()
    deadline = time.monotonic() + 10
    while grandchildren[0] in descendant_pids(root) and psutil.Process(grandchildren[0]).status() != "zombie":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    sample = sampler.sample()
    assert sample.memory_mb["tree"] > 0


def test_a_descendant_that_ends_while_the_tree_is_walked_drops_out_alone(process_tree, monkeypatch) -> None:
    """A PostgreSQL backend may exit between its parent's listing and its own:
    the sample loses that one process, not the whole component."""
    import os

    root, grandchildren = process_tree
    scandir = os.scandir

    def vanished(path):  # type: ignore[no-untyped-def]
        if path == f"/proc/{grandchildren[0]}/task":
            raise FileNotFoundError(path)
        return scandir(path)

    monkeypatch.setattr(os, "scandir", vanished)
    assert sorted(descendant_pids(root)) == sorted(grandchildren)
    sample = ProcessTreeSampler({"tree": root}).sample()
    assert sample.memory_mb["tree"] > 0
