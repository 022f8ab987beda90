"""One sandboxed call, close to wasmtime's C API.

wasmtime-py's convenience layer costs more than the WASM work of a small
function: every ``Func.__call__`` asks for the function's type again and
builds ``ValType`` objects, ``Instance.exports`` wraps every export, and
``Memory.write`` copies through a bytearray.  For the price_tax example that
was ~130 us of a ~140 us call.  This module keeps the same semantics with
fewer crossings:

* ``PreparedModule`` is made once per compiled module: an ``InstancePre``
  (imports resolved once) and the exports' names and signatures.
* ``Sandbox`` is one fresh store per call (nothing survives between calls
  or tenants), deleted as soon as the call ends, with the call's limits, one instance, exports looked up
  by name on demand, calls through ``wasmtime_func_call`` with values built
  in place, and memory copied in and out with single ``memmove`` /
  ``string_at`` calls after a bounds check.

It uses wasmtime-py's generated C bindings (``wasmtime._ffi``) and the
``_from_ptr`` constructors of ``Trap`` and ``WasmtimeError``, the same calls
the public wrappers make; ``tests/test_functions.py`` and
``tests/test_function_limits.py`` cover every path through it.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, Self

import wasmtime
from wasmtime import _ffi as ffi

from gateway.functions.limits import StoreBudget

NUMERIC_KINDS = ("i32", "i64", "f32", "f64")
_KIND_CODES = {"i32": ffi.WASMTIME_I32.value, "i64": ffi.WASMTIME_I64.value,
               "f32": ffi.WASMTIME_F32.value, "f64": ffi.WASMTIME_F64.value}
_TRAP_PTR = ctypes.POINTER(ffi.wasm_trap_t)
# A store without host data needs no finalizer (what wasmtime.Store passes too).
_NO_FINALIZER = ctypes.cast(0, ctypes.CFUNCTYPE(None, ctypes.c_void_p))


@dataclass(frozen=True)
class ExportSpec:
    name: str
    encoded: bytes
    kind: str  # "function", "memory", "table", "global", ...
    params: tuple[str, ...] = ()
    results: tuple[str, ...] = ()

    @property
    def numeric(self) -> bool:
        return all(k in _KIND_CODES for k in self.params + self.results)


def _export_spec(export: wasmtime.ExportType) -> ExportSpec:
    kind = export.type
    name = export.name
    if isinstance(kind, wasmtime.FuncType):
        return ExportSpec(name, name.encode(), "function", tuple(str(p) for p in kind.params),
                          tuple(str(r) for r in kind.results))
    if isinstance(kind, wasmtime.MemoryType):
        return ExportSpec(name, name.encode(), "memory")
    return ExportSpec(name, name.encode(), type(kind).__name__.removesuffix("Type").lower())


class PreparedModule:
    """A compiled module, pre-linked, with its exports described once."""

    def __init__(self, engine: wasmtime.Engine, module: wasmtime.Module) -> None:
        self.engine = engine
        self.module = module
        self.instance_pre = wasmtime.Linker(engine).instantiate_pre(module)
        self.exports: dict[str, ExportSpec] = {}
        for export in module.exports:
            self.exports[export.name] = _export_spec(export)


def _check(error: Any, trap: Any) -> None:
    """Raise what wasmtime reported, as its public wrappers do."""
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)
    if trap:
        raise wasmtime.Trap._from_ptr(trap)


class Sandbox:
    """A fresh store and instance for one call.  A start function runs in the
    constructor, under the store's fuel and epoch deadline.  Use it as a
    context manager: the store is deleted on the way out, not whenever a
    traceback that references it is collected."""

    def __init__(self, prepared: PreparedModule, budget: StoreBudget, fuel: int, ticks: int) -> None:
        self.prepared = prepared
        self._store = ffi.wasmtime_store_new(prepared.engine.ptr(), None, _NO_FINALIZER)
        try:
            self._context = ffi.wasmtime_store_context(self._store)
            ffi.wasmtime_store_limiter(self._store, budget.memory_size, budget.table_elements, budget.instances,
                                       budget.tables, budget.memories)
            _check(ffi.wasmtime_context_set_fuel(self._context, fuel), None)
            ffi.wasmtime_context_set_epoch_deadline(self._context, ticks)
            self._instance = ffi.wasmtime_instance_t()
            trap = _TRAP_PTR()
            error = ffi.wasmtime_instance_pre_instantiate(prepared.instance_pre.ptr(), self._context,
                                                          ctypes.byref(self._instance), ctypes.byref(trap))
            _check(error, trap)
        except BaseException:
            self.close()
            raise
        self._externs: dict[str, Any] = {}

    def close(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            ffi.wasmtime_store_delete(store)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def fuel_left(self) -> int:
        remaining = ctypes.c_uint64(0)
        _check(ffi.wasmtime_context_get_fuel(self._context, ctypes.byref(remaining)), None)
        return remaining.value

    def _extern(self, spec: ExportSpec) -> Any:
        found = self._externs.get(spec.name)
        if found is None:
            found = ffi.wasmtime_extern_t()
            if not ffi.wasmtime_instance_export_get(self._context, ctypes.byref(self._instance), spec.encoded,
                                                    len(spec.encoded), ctypes.byref(found)):
                raise KeyError(spec.name)
            self._externs[spec.name] = found
        return found

    def call(self, spec: ExportSpec, args: list[int | float]) -> list[int | float]:
        """Call a numeric export; ``args`` already match ``spec.params``
        (ints for i32/i64 in range, floats for f32/f64)."""
        func = self._extern(spec).of.func
        params = (ffi.wasmtime_val_t * len(args))()
        for slot, kind, value in zip(params, spec.params, args, strict=False):
            slot.kind = _KIND_CODES[kind]
            setattr(slot.of, kind, value)
        results = (ffi.wasmtime_val_t * len(spec.results))()
        trap = _TRAP_PTR()
        error = ffi.wasmtime_func_call(self._context, ctypes.byref(func), params, len(args), results,
                                       len(spec.results), ctypes.byref(trap))
        _check(error, trap)
        return [getattr(slot.of, kind) for slot, kind in zip(results, spec.results, strict=True)]

    def memory_size(self, spec: ExportSpec) -> int:
        return ffi.wasmtime_memory_data_size(self._context, ctypes.byref(self._extern(spec).of.memory))

    def _memory_base(self, spec: ExportSpec) -> tuple[int, int]:
        """(address, size) now; both change when memory grows."""
        memory = ctypes.byref(self._extern(spec).of.memory)
        base = ffi.wasmtime_memory_data(self._context, memory)
        return ctypes.cast(base, ctypes.c_void_p).value or 0, ffi.wasmtime_memory_data_size(self._context, memory)

    def write(self, spec: ExportSpec, offset: int, data: bytes) -> bool:
        """Copy ``data`` to ``offset``; False (nothing written) when the
        range is not inside the memory."""
        base, size = self._memory_base(spec)
        if offset < 0 or offset + len(data) > size:
            return False
        ctypes.memmove(base + offset, data, len(data))
        return True

    def read(self, spec: ExportSpec, offset: int, length: int) -> bytes | None:
        """``length`` bytes at ``offset``; None when out of range."""
        base, size = self._memory_base(spec)
        if offset < 0 or length < 0 or offset + length > size:
            return None
        if length == 0:
            return b""
        return ctypes.string_at(base + offset, length)
