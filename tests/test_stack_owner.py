"""A stack started in-process stops with its owner, however the owner dies;
``apprun-stack up`` (detached) leaves its services running.

Each test starts an owner process that starts services through the real
code path, then SIGKILLs the owner (nothing of it runs afterwards) and
waits, with a deadline, for the services to go."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import psutil
import pytest

from stack import postgres
from stack.processes import ServiceProcess, spawn, stop
from stack.stack import STOP_ORDER
from tests.conftest import stack_config

REPO = Path(__file__).resolve().parents[1]
OWNER_START_S = 30.0
SERVICE_GONE_S = 15.0
# Temporal and the gateway shut down gracefully; PostgreSQL's fast shutdown checkpoints.
STACK_GONE_S = 60.0
# A service that says which signal stopped it (in its log); a shell, so that
# it also runs as the PostgreSQL system user, who cannot read our Python.
SERVICE = ("trap 'kill $!; echo stopped by INT; exit 0' INT; trap 'kill $!; echo stopped by TERM; exit 0' TERM; "
           "echo ready; while :; do sleep 1 & wait $!; done")
# The owner: starts one service through stack.processes.spawn, writes its
# record, then waits to be killed.  With "gevent" it is monkey-patched as
# Locust is (the kpi plugin starts the stack there): gevent's own Popen runs
# the preexec hook.
SPAWN_OWNER = """
import sys
if sys.argv[6] == "gevent":
    from gevent import monkey
    monkey.patch_all()
import json, signal, time
from pathlib import Path
from stack.processes import spawn
out, user, stop_signal, detached = Path(sys.argv[1]), sys.argv[2] or None, int(sys.argv[3]), sys.argv[4] == "1"
kwargs = {"detached": True} if detached else {}
service = spawn("service", ["sh", "-c", sys.argv[5]], out.parent / "service.log", cwd=Path("/"), user=user,
                stop_signal=stop_signal, **kwargs)
out.write_text(json.dumps(service.to_json()))
time.sleep(600)
"""
# The owner of a whole embedded stack, started as the tests and the kpi
# plugin start it: stack.up(config).
STACK_OWNER = """
import json, sys, time
from pathlib import Path
from stack import stack
from stack.config import StackConfig
config = StackConfig.from_env(json.loads(sys.argv[2]), environ={})
state = stack.up(config, log=lambda message: None)
Path(sys.argv[1]).write_text(json.dumps({name: p.to_json() for name, p in state.processes.items()}))
time.sleep(600)
"""


def poll(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.1)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def start_owner(script: str, out: Path, *args: str) -> tuple[subprocess.Popen, dict]:
    owner = subprocess.Popen([sys.executable, "-c", script, str(out), *args], cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, stdin=subprocess.DEVNULL)
    poll(lambda: out.exists() or owner.poll() is not None, OWNER_START_S * 4, "the owner writes its services")
    assert owner.poll() is None, f"the owner exited with {owner.returncode}"
    return owner, json.loads(out.read_text())


def kill(owner: subprocess.Popen) -> None:
    owner.send_signal(signal.SIGKILL)
    owner.wait(timeout=10)


def run_as_other_user() -> str:
    if os.geteuid() != 0:
        pytest.skip("only root can start a process as another user")
    user = postgres.run_as_user()
    assert user is not None
    return user


@pytest.mark.parametrize(("as_other_user", "stop_signal", "flavour"),
                         [(False, signal.SIGTERM, "plain"), (True, signal.SIGINT, "plain"),
                          (True, signal.SIGINT, "gevent")],
                         ids=["same-user-sigterm", "other-user-sigint", "gevent-other-user-sigint"])
def test_owned_service_stops_when_its_owner_is_killed(tmp_path: Path, as_other_user: bool, stop_signal: int,
                                                      flavour: str) -> None:
    user = run_as_other_user() if as_other_user else ""
    owner, record = start_owner(SPAWN_OWNER, tmp_path / "service.json", user, str(int(stop_signal)), "0", SERVICE,
                                flavour)
    service = ServiceProcess.from_json(record)
    try:
        poll(lambda: "ready" in Path(service.log).read_text(), OWNER_START_S, "the service starts")
        if user:
            assert psutil.Process(service.pid).username() == user
        kill(owner)
        poll(lambda: gone(service.pid), SERVICE_GONE_S, "the service stops after its owner was killed")
        # Its own stop signal, so it could shut down cleanly.
        assert f"stopped by {signal.Signals(stop_signal).name[3:]}" in Path(service.log).read_text()
    finally:
        owner.kill()
        owner.wait()
        stop(service, timeout_s=5)  # on failure: leave nothing behind


def test_detached_service_outlives_its_owner(tmp_path: Path) -> None:
    owner, record = start_owner(SPAWN_OWNER, tmp_path / "service.json", "", str(int(signal.SIGTERM)), "1", SERVICE,
                                "plain")
    service = ServiceProcess.from_json(record)
    try:
        poll(lambda: "ready" in Path(service.log).read_text(), OWNER_START_S, "the service starts")
        kill(owner)
        # Give an (unwanted) parent-death signal the time it would need to arrive.
        poll(lambda: service.alive() and psutil.Process(service.pid).ppid() != owner.pid, SERVICE_GONE_S,
             "the detached service is re-parented")
        time.sleep(1)
        assert service.alive()
    finally:
        owner.kill()
        owner.wait()
        assert stop(service, timeout_s=5) == "stopped"


# An owner in a session of its own (so that a wrong autogroup write could
# only touch its own group), itself at nice 3, that starts one service at
# nice 7, plain or monkey-patched as Locust is: gevent's Popen runs
# preexec_fn before the point where it would call setsid().
NICE_OWNER = """
import sys
if sys.argv[3] == "gevent":
    from gevent import monkey
    monkey.patch_all()
import json, os, time
from pathlib import Path
os.nice(3)
from stack.processes import spawn
out = Path(sys.argv[1])
service = spawn("background", ["sh", "-c", sys.argv[2]], out.parent / "bg.log", cwd=Path("/"), nice=7)
out.write_text(json.dumps(service.to_json()))
time.sleep(600)
"""


def _autogroup(pid: int) -> tuple[str, int] | None:
    """(group, nice) from ``/proc/<pid>/autogroup`` ("/autogroup-123 nice 7"); None without autogroup."""
    path = Path(f"/proc/{pid}/autogroup")
    if not path.exists():
        return None
    group, _, nice = path.read_text().split()
    return group, int(nice)


@pytest.mark.parametrize("flavour", ["plain", "gevent"])
def test_background_service_runs_at_a_lower_priority_in_its_own_autogroup(tmp_path: Path, flavour: str) -> None:
    """``spawn(nice=N)``: the service (and what it starts) runs at nice N (not
    the owner's nice plus N), and so does its own session's autogroup, where
    the kernel has one: there a process's nice value only ranks it within
    its session.  The owner's session keeps its priority."""
    out = tmp_path / "service.json"
    owner = subprocess.Popen([sys.executable, "-c", NICE_OWNER, str(out), SERVICE, flavour], cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, stdin=subprocess.DEVNULL,
                             start_new_session=True)
    service = None
    try:
        poll(lambda: out.exists() or owner.poll() is not None, OWNER_START_S, "the owner writes its service")
        assert owner.poll() is None, f"the owner exited with {owner.returncode}"
        service = ServiceProcess.from_json(json.loads(out.read_text()))
        assert psutil.Process(service.pid).nice() == 7

        def child_nice_values() -> list[int]:  # the service's sleep comes and goes every second
            try:
                return [child.nice() for child in psutil.Process(service.pid).children()]
            except psutil.NoSuchProcess:
                return []

        poll(lambda: child_nice_values() == [7], OWNER_START_S, "the service's child runs at nice 7")
        assert os.getsid(service.pid) == service.pid  # a session of its own
        groups = _autogroup(service.pid), _autogroup(owner.pid)
        if groups[0] is not None:
            assert groups[0][1] == 7 and groups[1] is not None and groups[1][1] == 0
            assert groups[0][0] != groups[1][0]
    finally:
        owner.kill()
        owner.wait()
        if service is not None:  # owned: the owner's death stops it, maybe before this does
            assert stop(service, timeout_s=5) in ("stopped", "not running")


def test_a_child_whose_owner_is_already_gone_does_not_start(tmp_path: Path) -> None:
    """The owner may die between fork and prctl; the kernel then sends no
    signal, so the child checks its parent itself and does not start."""
    from stack.processes import _signal_on_death_of  # here: the other tests also run against older code

    marker = tmp_path / "ran"
    not_the_parent = 1  # what getppid() says once the owner is gone (or a subreaper's PID: also not the owner)
    orphan = subprocess.Popen(["touch", str(marker)], preexec_fn=_signal_on_death_of(not_the_parent, signal.SIGTERM))
    assert orphan.wait(timeout=10) == 1 and not marker.exists()
    child = subprocess.Popen(["touch", str(marker)], preexec_fn=_signal_on_death_of(os.getpid(), signal.SIGTERM))
    assert child.wait(timeout=10) == 0 and marker.exists()


def test_owned_services_start_from_the_main_thread_only(tmp_path: Path) -> None:
    """The kernel signals a child when the *thread* that forked it ends."""
    errors: list[BaseException] = []

    def start() -> None:
        try:
            spawn("service", ["true"], tmp_path / "service.log")
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=start)
    thread.start()
    thread.join(timeout=10)
    assert len(errors) == 1 and "main thread" in str(errors[0])


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE  # is_running also checks the start time
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_embedded_stack_stops_when_its_owner_is_killed(tmp_path: Path) -> None:
    config = stack_config(tmp_path / "state")
    values = {f.name: str(v) if isinstance(v := getattr(config, f.name), Path) else v for f in fields(config)}
    owner, records = start_owner(STACK_OWNER, tmp_path / "services.json", json.dumps(values))
    services = {name: ServiceProcess.from_json(record) for name, record in records.items()}
    try:
        assert set(services) == {"postgres", "temporal", "worker", "gateway"}
        procs = [proc for service in services.values() if (proc := service.process()) is not None]
        assert len(procs) == len(services)
        procs += [child for proc in procs for child in proc.children(recursive=True)]  # PostgreSQL's backends
        kill(owner)
        poll(lambda: not any(_alive(proc) for proc in procs), STACK_GONE_S,
             "every service and its children stop after the owner was killed")
        # PostgreSQL got its fast shutdown (SIGINT), not a kill: it shut down cleanly.
        assert "received fast shutdown request" in Path(services["postgres"].log).read_text()
    finally:
        owner.kill()
        owner.wait()
        for name in STOP_ORDER:
            if name in services:
                stop(services[name], timeout_s=10)  # on failure: leave nothing behind
