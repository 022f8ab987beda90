"""The WASM runtime: compile once per digest, sandbox every call.

* One wasmtime Engine per process with fuel metering and epoch interruption.
* Modules are compiled once per digest and kept in memory; the compiled
  artifact is also written to a cache directory (wasmtime serialize), so a
  restarted gateway deserializes (~0.1 ms) instead of compiling again.
* Every invocation gets a fresh Store: no state survives between calls or
  tenants.  Each store has a fuel budget, a memory limit and an epoch
  deadline; a native ticker thread advances the epoch, so a runaway loop is
  interrupted on time even while the gevent hub is busy elsewhere.
* Calls run on a native thread pool: wasmtime-py calls go through ctypes,
  which releases the GIL, so the hub keeps serving other requests.  Small
  calls of modules seen to be small run inline instead, within a slice of
  fuel and time, and run again in the pool when they outgrow it
  (functions/inline.py): the hand-off cost more than such a call.
"""
from __future__ import annotations

import _thread
import contextlib
import functools
import hashlib
import logging
import math
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wasmtime

from gateway.functions.abi import (
    FunctionError,
    call_handler,
    call_numeric,
    is_numeric_call,
)
from gateway.functions.demotion import LongCallDemotion
from gateway.functions.engine import Pooling, build_engine
from gateway.functions.inline import INLINE, INLINE_CUT, POOL, InlineCalls
from gateway.functions.limits import Limits, resolve_limits, store_budget
from gateway.functions.sandbox import PreparedModule, Sandbox
from gateway.native import NativePool, native_sleep, original, retire_this_thread, start_native_thread

log = logging.getLogger(__name__)

PAGE_BYTES = 65536
#: wasmtime's compile error for a module whose tables or memories exceed the
#: pooling allocator's slots ("... does not fit in pooling allocator requirements").
POOLING_REFUSAL = "pooling allocator"
MODULE_CACHE_SIZE = 256
#: How long the epoch ticker keeps ticking after the last call ends; see EpochTicker.
TICKER_LINGER_S = 1.0
ABI_EXPORTS = ("memory", "alloc", "handle")
__all__ = ["FunctionError", "FunctionRuntime", "InvokeResult", "Limits"]


@dataclass
class InvokeResult:
    output: Any
    cold_start_ms: float | None
    duration_us: float
    fuel_used: int


class EpochTicker:
    """Advances the engine's epoch every ``tick_ms`` on a native thread
    while calls run, and for ``linger_s`` after the last one ends.

    An epoch deadline is set relative to the epoch when a store is made, and
    only a running call can pass it, so ticks while nothing runs serve no
    purpose; each one takes the GIL, and 100 idle wake-ups a second were the
    idle gateway's whole CPU (about 8 ms per second, measured with py-spy
    and psutil).  So the ticker parks when calls stop.  It lingers first:
    waking it costs a thread wake-up and a GIL hand-off, more than a small
    call run inline on the hub (functions/inline.py), and under load calls
    come many times a second.  A call's deadline counts from its first
    tick, which comes at most ``tick_ms`` after the call starts."""

    def __init__(self, engine: wasmtime.Engine, tick_ms: int, on_tick: Callable[[], None] = lambda: None,
                 linger_s: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._on_tick = on_tick
        self._interval = tick_ms / 1000.0
        self._linger_s = linger_s
        self._clock = clock
        self._stopped = False
        # Native locks: the calls run on native pool threads (or inline on
        # the hub, which never waits long on them) and the ticker on its own thread.
        allocate_lock = original("_thread", "allocate_lock", _thread.allocate_lock)
        self._count_lock = allocate_lock()
        # A one-permit semaphore: the parked ticker waits to acquire it,
        # the first call to start while it is parked releases it.
        self._wake = allocate_lock()
        self._wake.acquire()
        self._parked = False
        self._running = 0
        self._last_end = -math.inf
        start_native_thread(self._run, "wasm-epoch-ticker")

    def _run(self) -> None:
        sleep = native_sleep()
        while not self._stopped:
            with self._count_lock:
                park = self._running == 0 and self._clock() - self._last_end >= self._linger_s
                self._parked = park
            if park:
                self._wake.acquire()  # until a call starts (or stop())
                continue
            sleep(self._interval)
            self._engine.increment_epoch()
            self._on_tick()

    @property
    def parked(self) -> bool:
        """True while the thread waits for a call to start."""
        return self._parked

    @contextmanager
    def running(self) -> Iterator[None]:
        with self._count_lock:
            self._running += 1
            if self._parked:
                self._parked = False
                self._wake.release()
        try:
            yield
        finally:
            with self._count_lock:
                self._running -= 1
                self._last_end = self._clock()

    def stop(self) -> None:
        with self._count_lock:
            self._stopped = True
            if self._parked:  # let the thread see _stopped and end
                self._parked = False
                self._wake.release()


def describe_exports(module: wasmtime.Module) -> list[dict[str, Any]]:
    described = []
    for export in module.exports:
        kind = export.type
        if isinstance(kind, wasmtime.FuncType):
            described.append({"name": export.name, "kind": "function",
                              "params": [str(p) for p in kind.params], "results": [str(r) for r in kind.results]})
        elif isinstance(kind, wasmtime.MemoryType):
            described.append({"name": export.name, "kind": "memory"})
        else:
            described.append({"name": export.name, "kind": type(kind).__name__.removesuffix("Type").lower()})
    return described


def validate_exports(exports: list[dict[str, Any]]) -> None:
    by_name = {e["name"]: e for e in exports}
    functions = [e for e in exports if e["kind"] == "function"]
    if not functions:
        raise FunctionError(400, "missing_exports", "the module exports no function to invoke")
    if "handle" in by_name:
        missing = [name for name in ABI_EXPORTS if name not in by_name]
        if missing:
            raise FunctionError(400, "missing_exports",
                                f"a JSON handler must also export {', '.join(missing)}",
                                hint="see the function ABI in the README: memory, alloc(len)->ptr, "
                                     "handle(ptr,len)->i64")
        signatures = {"alloc": (["i32"], ["i32"]), "handle": (["i32", "i32"], ["i64"])}
        for name, (params, results) in signatures.items():
            export = by_name[name]
            if export["kind"] != "function" or export["params"] != params or export["results"] != results:
                raise FunctionError(400, "bad_export_signature",
                                    f"'{name}' must be a function {params} -> {results}")
        if by_name["memory"]["kind"] != "memory":
            raise FunctionError(400, "bad_export_signature", "'memory' must be a memory")


class FunctionRuntime:
    def __init__(self, *, defaults: Limits, ceilings: Limits, tick_ms: int, threads: int,
                 table_elements: int = 10_000, cache_dir: str = "", pooling: bool = False,
                 thread_nice: int = 0, demote_after_ms: int = 0, inline_fuel: int = 0,
                 on_cold_start: Callable[[float], None] | None = None,
                 on_call: Callable[[float], None] | None = None,
                 on_placed: Callable[[str], None] | None = None) -> None:
        # Every store lives on one pool thread and is deleted before that
        # thread takes the next call; the slack covers inline (ungevented) use.
        self.engine = build_engine(Pooling(2 * max(1, threads) + 2, ceilings.memory_bytes, table_elements)
                                   if pooling else None)
        self.defaults = defaults
        self.ceilings = ceilings
        self._default_values = defaults.to_json()
        self._ceiling_values = ceilings.to_json()
        self.tick_ms = tick_ms
        self.table_elements = table_elements
        self._modules: OrderedDict[str, PreparedModule] = OrderedDict()
        self._invoked: set[str] = set()
        self._lock = threading.Lock()
        self._cache_dir = Path(cache_dir) if cache_dir else None
        self._fingerprint = hashlib.sha256(
            f"wasmtime-{getattr(wasmtime, '__version__', '?')}-fuel-epoch-pooling={pooling}".encode()).hexdigest()[:12]
        # WASM threads run below the request path (hub, PostgreSQL): a tenant's
        # spinning call then takes the CPU the others leave, not theirs.
        self._pool = NativePool(threads, nice=thread_nice)
        # A call running longer than demote_after_ms drops to SCHED_IDLE
        # (functions/demotion.py); 0 turns that off.  Only on the pool's own
        # threads: a call run inline (no gevent) would demote its caller.
        self._demotion = (LongCallDemotion(demote_after_ms / 1000, thread_nice, on_spent=retire_this_thread)
                          if demote_after_ms > 0 and self._pool.threaded else None)
        # Small calls of modules known to be small run on the caller's
        # thread (functions/inline.py).  Without gevent the pool runs calls
        # on the caller's thread too; the rule is the same, so it is tested there.
        self._inline = InlineCalls(inline_fuel) if inline_fuel > 0 else None
        self._ticker = EpochTicker(self.engine, tick_ms,
                                   on_tick=self._demotion.demote_overdue if self._demotion else lambda: None,
                                   linger_s=TICKER_LINGER_S if self._inline else 0.0)
        self._on_cold_start = on_cold_start
        self._on_call = on_call
        self._on_placed = on_placed or (lambda _placement: None)

    # -- deploy ------------------------------------------------------------
    def compile(self, wasm: bytes, limits: Limits | None = None) -> tuple[str, PreparedModule, list[dict[str, Any]]]:
        """Validate and compile; returns (digest, prepared module, exports).  With
        ``limits``, also refuse a module that cannot even be instantiated
        within them (a declared table or memory above the budget)."""
        try:
            module = self._run(wasmtime.Module, self.engine, wasm)
        except wasmtime.WasmtimeError as exc:
            first_line = str(exc).splitlines()[0][:500]
            if POOLING_REFUSAL in first_line:  # valid, but its tables or memories exceed every slot
                raise _exceeds_limits(first_line) from None
            raise FunctionError(400, "invalid_module", "the module does not validate", details=first_line) from None
        if module.imports:
            names = [f"{i.module}.{i.name}" for i in module.imports]
            raise FunctionError(400, "unsupported_imports", "modules may not import anything",
                                details=names[:20])
        exports = describe_exports(module)
        validate_exports(exports)
        prepared = PreparedModule(self.engine, module)
        if limits is not None:
            self._run(self._check_fits, prepared, limits)
        digest = "sha256:" + hashlib.sha256(wasm).hexdigest()
        self._remember(digest, prepared)
        self._write_artifact(digest, module)
        return digest, prepared, exports

    def _check_fits(self, prepared: PreparedModule, limits: Limits) -> None:
        """Instantiate once with no fuel: wasmtime allocates the declared
        tables and memories first, so a module over its budget fails with a
        WasmtimeError; a start function traps at once (no fuel) and is not
        judged here, it runs under the call's limits at every invocation."""
        try:
            Sandbox(prepared, store_budget(limits.memory_bytes, self.table_elements), fuel=0, ticks=1).close()
        except wasmtime.Trap:
            pass
        except wasmtime.WasmtimeError as exc:
            raise _exceeds_limits(str(exc).splitlines()[0][:300]) from None

    def resolve_limits(self, requested: dict[str, Any]) -> Limits:
        return resolve_limits(requested, self.defaults, self.ceilings)

    def effective_limits(self, stored: dict[str, Any]) -> Limits:
        """A deployed function's limits under today's ceilings: a function
        deployed under a higher ceiling is held to the current one.  Per
        invoke, so the two dicts are made once (``to_json`` deep-copies)."""
        values = {**self._default_values, **stored}
        return Limits(**{name: min(int(values[name]), ceiling) for name, ceiling in self._ceiling_values.items()})

    # -- module cache ----------------------------------------------------------
    def _remember(self, digest: str, module: PreparedModule) -> None:
        with self._lock:
            self._modules[digest] = module
            self._modules.move_to_end(digest)
            while len(self._modules) > MODULE_CACHE_SIZE:
                self._modules.popitem(last=False)

    def _artifact_path(self, digest: str) -> Path | None:
        if self._cache_dir is None:
            return None
        return self._cache_dir / f"{digest.removeprefix('sha256:')}-{self._fingerprint}.cwasm"

    def _write_artifact(self, digest: str, module: wasmtime.Module) -> None:
        path = self._artifact_path(digest)
        if path is None or path.exists():
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
                tmp.write(module.serialize())
            os.replace(tmp.name, path)
        except OSError as exc:  # a cache, never a reason to fail a deploy
            log.warning("cannot write compiled module cache %s: %s", path, exc)

    def cached(self, digest: str) -> bool:
        with self._lock:
            return digest in self._modules

    def load(self, digest: str, fetch_wasm: Callable[[], bytes]) -> tuple[PreparedModule, float | None]:
        """The compiled module for ``digest``; (module, load_ms) where load_ms
        is None for a warm call and the load time (compile or deserialize,
        0.0 when compiled at deploy) for this process's first call."""
        with self._lock:
            module = self._modules.get(digest)
            first_call = digest not in self._invoked
            self._invoked.add(digest)
        if module is not None:
            # Compiled at deploy time: the first call still pays instantiation.
            return module, (0.0 if first_call else None)
        started = time.perf_counter()
        path = self._artifact_path(digest)
        module: wasmtime.Module | None = None
        if path is not None and path.exists():
            try:
                module = self._run(wasmtime.Module.deserialize_file, self.engine, str(path))
            except wasmtime.WasmtimeError:
                log.warning("stale compiled module %s, recompiling", path)
        if module is None:
            wasm = fetch_wasm()
            if "sha256:" + hashlib.sha256(wasm).hexdigest() != digest:
                raise FunctionError(500, "module_digest_mismatch", "stored module does not match its digest")
            module = self._run(wasmtime.Module, self.engine, wasm)
            self._write_artifact(digest, module)
        prepared = PreparedModule(self.engine, module)
        self._remember(digest, prepared)
        return prepared, (time.perf_counter() - started) * 1000

    # -- invoke ------------------------------------------------------------------
    def invoke(self, module: PreparedModule, limits: Limits, request: dict[str, Any] | Any,
               load_ms: float | None, charge: Callable[[float], None] | None = None,
               on_native_done: Callable[[], None] | None = None) -> InvokeResult:
        """Run the call inline when its module is known to be small
        (functions/inline.py), else on the native pool; ``charge(seconds)``
        gets the time the call ran (not the time it queued), success or
        failure, and then ``on_native_done()`` runs, as soon as the work
        ends (on the native thread, before the hub resumes this greenlet).
        Charged first: a caller waiting for the slot ``on_native_done``
        gives back must find the tenant's time already debited."""
        if self._inline is not None and self._inline.eligible(module):
            outcome, seconds = _timed(self._invoke_inline, module, limits, request)
            if charge is not None:
                charge(seconds)
            if not isinstance(outcome, _SliceSpent):
                self._on_placed(INLINE)
                if on_native_done is not None:
                    on_native_done()
                if isinstance(outcome, BaseException):
                    raise outcome
                return outcome
            self._inline.cut(module)
            self._on_placed(INLINE_CUT)
        def native_done(seconds: float) -> None:
            if charge is not None:
                charge(seconds)
            if on_native_done is not None:
                on_native_done()

        timed = functools.partial(_timed, on_native_done=native_done)
        outcome, _seconds = self._run(timed, self._invoke_sync, module, limits, request, load_ms)
        self._on_placed(POOL)
        if isinstance(outcome, BaseException):
            raise outcome
        if self._inline is not None:
            self._inline.observed_in_pool(module, outcome.fuel_used)
        return outcome

    def _deadline_ticks(self, limits: Limits) -> int:
        return max(1, math.ceil(limits.timeout_ms / self.tick_ms))

    def _invoke_sync(self, module: PreparedModule, limits: Limits, request: Any,
                     load_ms: float | None) -> InvokeResult:
        with self._ticker.running(), (self._demotion.call() if self._demotion else contextlib.nullcontext()):
            return self._invoke_ticking(module, limits, request, load_ms, limits.fuel, self._deadline_ticks(limits))

    def _invoke_inline(self, module: PreparedModule, limits: Limits, request: Any) -> InvokeResult:
        """One attempt within the inline slice; raises _SliceSpent when the
        slice (not the call's own limits) stopped it."""
        assert self._inline is not None
        with self._ticker.running():
            return self._invoke_ticking(module, limits, request, None, min(limits.fuel, self._inline.fuel),
                                        min(self._deadline_ticks(limits), self._inline.ticks))

    def _invoke_ticking(self, module: PreparedModule, limits: Limits, request: Any,
                        load_ms: float | None, fuel: int, ticks: int) -> InvokeResult:
        """The call with ``fuel`` and ``ticks``: the call's own limits, or
        less for an inline attempt, whose traps on them are _SliceSpent."""
        def sliced(trap: wasmtime.Trap) -> bool:
            return ((trap.trap_code == wasmtime.TrapCode.OUT_OF_FUEL and fuel < limits.fuel)
                    or (trap.trap_code == wasmtime.TrapCode.INTERRUPT and ticks < self._deadline_ticks(limits)))

        started = time.perf_counter()
        try:
            # A start function runs here, under the same fuel and epoch deadline.
            sandbox = Sandbox(module, store_budget(limits.memory_bytes, self.table_elements), fuel, ticks)
        except wasmtime.Trap as trap:
            if sliced(trap):
                raise _SliceSpent from None
            raise _trap_error(trap, None, limits) from None
        except wasmtime.WasmtimeError as exc:
            raise FunctionError(422, "function_memory_limit" if "memory" in str(exc) else "instantiation_failed",
                                "the module could not be instantiated within its limits",
                                details=str(exc).splitlines()[0][:300]) from None
        instantiated = time.perf_counter()
        with sandbox:
            try:
                if is_numeric_call(request):
                    output = call_numeric(sandbox, request)
                else:
                    output = call_handler(sandbox, request)
            except wasmtime.Trap as trap:
                if sliced(trap):
                    raise _SliceSpent from None
                raise _trap_error(trap, _memory_in_use(sandbox), limits) from None
            except wasmtime.WasmtimeError as exc:
                raise FunctionError(422, "function_error", "the function failed",
                                    details=str(exc).splitlines()[0][:300]) from None
            # Measured before the store is deleted, as it always was.
            finished = time.perf_counter()
            fuel_used = fuel - sandbox.fuel_left()
        cold_ms = None
        if load_ms is not None:
            cold_ms = load_ms + (instantiated - started) * 1000
            if self._on_cold_start:
                self._on_cold_start(cold_ms / 1000)
        duration_us = (finished - started) * 1e6
        if self._on_call:
            self._on_call(duration_us / 1e6)
        return InvokeResult(output, cold_ms, duration_us, fuel_used)

    def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._pool.apply(fn, *args)

    def close(self) -> None:
        self._ticker.stop()


def _exceeds_limits(details: str) -> FunctionError:
    return FunctionError(400, "module_exceeds_limits", "the module cannot be instantiated within its limits",
                         details=details, hint="declare smaller tables or memories, or deploy with a higher "
                                               "memory_bytes (tables count toward it)")


class _SliceSpent(Exception):  # noqa: N818 - a signal between two methods, never seen by callers
    """An inline attempt reached its slice: run the call again in the pool."""


def _timed(fn: Callable[..., Any], *args: Any,
           on_native_done: Callable[[float], None] | None = None) -> tuple[Any, float]:
    """(result or raised exception, seconds) of ``fn`` on the thread that runs it;
    the exception is raised again by the caller, on its own thread.
    ``on_native_done(seconds)`` runs on this thread once ``fn`` has ended."""
    started = time.perf_counter()
    try:
        outcome: Any = fn(*args)
    except Exception as exc:  # noqa: BLE001 - handed back and raised by the caller, not swallowed
        outcome = exc
    finally:
        seconds = time.perf_counter() - started
        if on_native_done is not None:
            on_native_done(seconds)
    return outcome, seconds


def _memory_in_use(sandbox: Sandbox) -> int | None:
    memory = sandbox.prepared.exports.get("memory")
    if memory is None or memory.kind != "memory":
        return None
    return sandbox.memory_size(memory)


def _trap_error(trap: wasmtime.Trap, memory_in_use: int | None, limits: Limits) -> FunctionError:
    code = trap.trap_code
    lines = [line.strip() for line in (trap.message or "").splitlines() if line.strip()]
    first_line = lines[-1][:300] if lines else None  # wasmtime's last line names the trap
    if code == wasmtime.TrapCode.OUT_OF_FUEL:
        return FunctionError(422, "function_out_of_fuel", f"the function used its whole fuel budget ({limits.fuel})",
                             hint="make it cheaper or deploy it with a higher fuel limit")
    if code == wasmtime.TrapCode.INTERRUPT:
        return FunctionError(504, "function_timeout", f"the function ran longer than {limits.timeout_ms} ms",
                             hint="deploy it with a higher timeout_ms within the ceiling")
    # memory.grow fails quietly at the limit (-1); a module that then traps
    # has, in practice, hit its memory limit.
    if memory_in_use is not None and memory_in_use + 16 * PAGE_BYTES > limits.memory_bytes:
        return FunctionError(422, "function_memory_limit",
                             f"the function trapped at its memory limit ({limits.memory_bytes} bytes)",
                             details=first_line)
    kind = code.name.lower() if code is not None else "unknown"
    return FunctionError(422, "function_trap", f"the function trapped: {kind}", details=first_line)
