"""Start services, recognise them later, stop exactly them.

A PID alone can be reused by another program after a reboot or a crash, so
every record also keeps the process's start time; a PID whose start time
differs is not ours and is never signalled.

A service is either *owned* (the default) or *detached*.  An owned service
gets its stop signal from the kernel when the process that started it dies,
however it dies (SIGKILL, a crash, the OOM killer), so a crashed test run or
load run leaves nothing behind.  A detached one outlives the command that
started it, which is what ``apprun-stack up`` is for: ``stack/cli.py`` is
the one caller that asks for it (``stack.up(config, detached=True)``).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

STOP_TIMEOUT_S = 15.0


@dataclass
class ServiceProcess:
    name: str
    pid: int
    create_time: float
    log: str
    stop_signal: int = signal.SIGTERM

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping) -> ServiceProcess:
        return cls(**data)

    def process(self) -> psutil.Process | None:
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 0.5 or proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.Error:
            return None

    def alive(self) -> bool:
        return self.process() is not None


def spawn(name: str, argv: list[str], log_path: Path, env: Mapping[str, str] | None = None,
          cwd: Path | None = None, user: str | None = None, stop_signal: int = signal.SIGTERM,
          detached: bool = False, nice: int = 0) -> ServiceProcess:
    """Start ``argv`` in a session of its own, output to ``log_path``.
    Owned (``detached=False``): it receives ``stop_signal`` when this
    process dies; detached: it runs until someone stops it.  ``nice`` > 0:
    it runs at that nice value at least (``_lower_priority``)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # The session is started here rather than with start_new_session: gevent's
    # Popen (the kpi plugin starts the stack inside Locust) runs preexec_fn
    # before its setsid(), and the priority step must act on the service's
    # own session, not on its owner's.
    steps = [os.setsid, None if detached else _die_with_this_process(stop_signal),
             _lower_priority(nice) if nice > 0 else None]
    preexec = _in_order([step for step in steps if step is not None])
    with open(log_path, "ab") as log_file:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=str(cwd) if cwd else None,
            preexec_fn=preexec,  # its own session and process group: stop it and its children together
            **as_user(user),
        )
    proc = psutil.Process(popen.pid)
    # The Popen object is dropped; mark it reaped-by-psutil so Python does
    # not warn, and so the process may outlive this command.
    popen.returncode = 0
    return ServiceProcess(name, popen.pid, proc.create_time(), str(log_path), int(stop_signal))


def _in_order(steps: list[Callable[[], None]]) -> Callable[[], None]:
    def preexec() -> None:
        for step in steps:
            step()

    return preexec


#: The scheduler's per-session group (``CONFIG_SCHED_AUTOGROUP``); writing
#: a nice value to it weights the whole session.
AUTOGROUP_FILE = "/proc/self/autogroup"


def _lower_priority(nice: int) -> Callable[[], None]:
    """A ``preexec_fn`` that lowers the service's CPU priority to ``nice``.

    Each service starts a session of its own, and where the kernel groups
    CPU time by session (autogroup, on by default in most distributions and
    on the dev machine), a process's nice value only ranks it against the
    processes of its own session: every session gets an equal share of a
    busy CPU, whatever its processes' nice values.  So both are lowered: the
    session's autogroup (it holds only this service) and, for kernels that
    do not group by session, the process's own nice value, which its
    threads and children inherit.  Lowering a priority needs no privilege;
    a kernel without autogroup has no such file, which is not an error."""

    def preexec() -> None:
        # The value itself, not an increment: an owner already at nice 5
        # gives its services nice 10, not 15.
        if os.getpriority(os.PRIO_PROCESS, 0) < nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        if os.getsid(0) != os.getpid():  # not its own session: the autogroup is someone else's
            return
        try:
            with open(AUTOGROUP_FILE, "w") as autogroup:
                autogroup.write(str(nice))
        except OSError:
            pass

    return preexec


# prctl(2): the signal the kernel sends a process when its parent dies.
PR_SET_PDEATHSIG = 1


def _die_with_this_process(signum: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that ties the child to this process.

    * The kernel's "parent" is the *thread* that forked: a service started
      from a thread that later ends would be stopped then.  Owned services
      are therefore started from the main thread only, which lives as long
      as the process (also under gevent: greenlets share the main thread,
      and ``get_native_id`` is the OS thread's even when monkey-patched).
    * Changing the effective uid clears the setting (as does exec of a
      set-uid binary); subprocess (CPython's and gevent's) runs
      ``preexec_fn`` *after* switching to ``user``, so it survives.  The
      kernel sends the signal with the dying owner's rights: a root owner
      (the only one that runs services as another user) may signal any.
    * The signal is the service's own stop signal, so PostgreSQL gets its
      fast shutdown (SIGINT) and takes its backends with it."""
    if not sys.platform.startswith("linux"):
        warnings.warn("services cannot be tied to their owner outside Linux; they may outlive it",
                      RuntimeWarning, stacklevel=3)
        return None
    if threading.get_native_id() != os.getpid():
        raise RuntimeError("an owned service must be started from the main thread: the kernel stops it "
                           "when the thread that started it ends")
    return _signal_on_death_of(os.getpid(), signum)


def _signal_on_death_of(owner_pid: int, signum: int) -> Callable[[], None]:
    # Resolved here: between fork and exec the child should only make the call.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int

    def preexec() -> None:
        if prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        # The owner died before prctl took effect (the child now belongs to
        # init or a subreaper): no signal will come, so do not start at all.
        if os.getppid() != owner_pid:
            os._exit(1)

    return preexec


def as_user(user: str | None) -> dict:
    """subprocess arguments that run as ``user`` with *its* groups only
    (root's group would otherwise stay and mask 'other' permissions)."""
    if user is None:
        return {}
    import pwd

    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


@contextlib.contextmanager
def stopped_if_start_fails(service: ServiceProcess) -> Iterator[ServiceProcess]:
    """``with stopped_if_start_fails(spawn(...)) as service: <wait until ready>``:
    a service whose start-up fails after it was spawned (not ready in time,
    a set-up command refused) is stopped before the error goes on.  Its
    caller never got it back, so nobody else would stop it."""
    try:
        yield service
    except BaseException:
        stop(service)
        raise


def wait_until(check: Callable[[], bool], timeout_s: float, service: ServiceProcess | None = None,
               what: str = "service", interval_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service is not None and not service.alive():
            raise RuntimeError(f"{what} exited during start-up; see its log:\n{tail(service.log)}")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            pass
        time.sleep(interval_s)
    log_hint = f"\n{tail(service.log)}" if service else ""
    raise TimeoutError(f"{what} did not become ready within {timeout_s:.0f} s{log_hint}")


def stop(service: ServiceProcess, timeout_s: float = STOP_TIMEOUT_S) -> str:
    """Stop gracefully with the service's stop signal, then SIGKILL its
    process group after ``timeout_s``.  Returns what happened."""
    proc = service.process()
    if proc is None:
        return "not running"
    group = [proc] + _children(proc)
    try:
        proc.send_signal(service.stop_signal)
    except psutil.NoSuchProcess:
        return "stopped"
    _gone, alive = psutil.wait_procs(group, timeout=timeout_s)
    if not alive:
        return "stopped"
    for leftover in alive:
        try:
            leftover.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    return "killed after timeout"


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 16384))
            text = handle.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])
