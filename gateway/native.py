"""Real OS threads inside a gevent-patched process.

Under ``monkey.patch_all()`` even the "original" threading.Thread class
starts greenlets (it calls the patched ``_thread.start_new_thread``).
Native helpers (the WASM epoch ticker, the Temporal asyncio loop) must run
on real threads, so they start through the unpatched primitive.
"""
from __future__ import annotations

import _thread
import os
import threading
import time
from collections.abc import Callable
from typing import Any


def gevent_patched() -> bool:
    try:
        from gevent.monkey import is_module_patched
    except ImportError:  # pragma: no cover - gevent is a dependency
        return False
    return is_module_patched("threading")


def original(module: str, name: str, default: Any) -> Any:
    if gevent_patched():
        from gevent.monkey import get_original

        return get_original(module, name)
    return default


def start_native_thread(target: Callable[[], None], name: str) -> None:
    if gevent_patched():
        original("_thread", "start_new_thread", None)(target, ())
    else:
        threading.Thread(target=target, name=name, daemon=True).start()


def native_sleep() -> Callable[[float], None]:
    return original("time", "sleep", time.sleep)


class NativePool:
    """A bounded pool of native threads for CPU-heavy native code (argon2,
    wasmtime) that releases the GIL.  Under gevent it is gevent's ThreadPool,
    so the calling greenlet yields while the work runs; without gevent the
    call runs inline.  Bounded on purpose: every thread that allocates gets
    its own glibc arena, so a wide pool multiplies retained memory."""

    def __init__(self, threads: int, nice: int = 0) -> None:
        self._pool = None
        self._nice = nice
        if gevent_patched():
            self._pool = _retiring_thread_pool(max(1, threads))

    @property
    def threaded(self) -> bool:
        """False when calls run inline on the caller's thread (no gevent)."""
        return self._pool is not None

    def apply(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._pool is None:
            return fn(*args)
        if self._nice:
            return self._pool.apply(_at_nice, (self._nice, fn, *args))
        return self._pool.apply(fn, args)


# Per native thread (the original thread-local: the pool's threads are real
# threads, and gevent's patched local would key on greenlets).
_thread_state = original("_thread", "_local", _thread._local)()


def retire_this_thread() -> None:
    """Called from a task on a NativePool thread: the thread ends after the
    task and the pool starts a fresh one when it next needs it.  For a thread
    whose scheduling class cannot be given back (functions/demotion.py): a
    new thread starts from the hub's thread and inherits its class.  Only
    pool threads read the flag."""
    _thread_state.retire = True


def _retiring_thread_pool(threads: int) -> Any:
    """gevent's ThreadPool whose workers end after a task that asked to
    retire.  gevent ends a worker whose after-task hook raises (its
    "replacement starts with clean hooks", and the pool adds threads on
    demand); SystemExit ends it without gevent printing an error.
    tests/test_function_demotion.py checks this against the pinned gevent."""
    from gevent.threadpool import ThreadPool

    class RetiringWorker(ThreadPool._WorkerGreenlet):  # type: ignore[name-defined,misc]
        def _after_run_task(self, *args: Any, **kwargs: Any) -> None:
            super()._after_run_task(*args, **kwargs)
            if getattr(_thread_state, "retire", False):
                raise SystemExit

    class RetiringThreadPool(ThreadPool):
        _WorkerGreenlet = RetiringWorker

    return RetiringThreadPool(threads)


def _at_nice(nice: int, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn`` on this pool thread after lowering the thread's priority to
    ``nice``.  Linux keeps a nice value per thread (``PRIO_PROCESS`` with 0
    names the calling thread), so it is set on the thread's first call only:
    the check costs a syscall, and every call would pay it.  Lowering needs
    no privilege; a failure leaves the priority as it was (and is not
    retried: it would fail again)."""
    if not getattr(_thread_state, "niced", False):
        _thread_state.niced = True
        try:
            if os.getpriority(os.PRIO_PROCESS, 0) < nice:
                os.setpriority(os.PRIO_PROCESS, 0, nice)
        except OSError:
            pass
    return fn(*args)
