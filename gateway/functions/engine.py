"""The wasmtime engine: fuel metering, epoch interruption and, optionally,
the pooling instance allocator.

With pooling, wasmtime keeps a fixed number of pre-reserved slots for
instances, memories and tables and hands a slot to each new store instead
of mapping (and later unmapping) fresh memory.  When a store is deleted its
slot is reset: memory is zeroed (``memset`` for the first
``KEEP_RESIDENT_BYTES``, ``madvise(DONTNEED)`` beyond) and tables cleared,
so a call still starts from fresh state; it is the allocator wasmtime
recommends for many short-lived instances.  On this machine it takes the
price_tax call from ~128 to ~88 us when the CPU has been idle between calls
(the gateway's usual case), mostly in instantiation and store deletion.

Slots are finite: every store lives on one of the runtime's native threads
and is deleted before the thread takes the next call, so ``slots`` only has
to cover the pool's threads, with some slack.  The pooling settings are not
part of wasmtime-py's ``Config`` class, so they are set through its
generated C bindings.
"""
from __future__ import annotations

from dataclasses import dataclass

import wasmtime
from wasmtime import _ffi as ffi

from gateway.functions.limits import TABLE_SLOTS

#: Zeroed with memset on reuse instead of returned to the kernel: the first
#: page of a small function's memory, which is nearly always touched.
KEEP_RESIDENT_BYTES = 64 * 1024
#: Room for the VM context of large modules (wasmtime's default is 1 MiB).
MAX_CORE_INSTANCE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Pooling:
    slots: int
    max_memory_bytes: int
    table_elements: int


def build_engine(pooling: Pooling | None) -> wasmtime.Engine:
    config = wasmtime.Config()
    config.consume_fuel = True
    config.epoch_interruption = True
    if pooling is not None:
        _use_pooling(config, pooling)
    return wasmtime.Engine(config)


def _use_pooling(config: wasmtime.Config, pooling: Pooling) -> None:
    pool = ffi.wasmtime_pooling_allocation_config_new()
    try:
        ffi.wasmtime_pooling_allocation_config_total_core_instances_set(pool, pooling.slots)
        ffi.wasmtime_pooling_allocation_config_total_memories_set(pool, pooling.slots)
        ffi.wasmtime_pooling_allocation_config_total_tables_set(pool, pooling.slots * TABLE_SLOTS)
        ffi.wasmtime_pooling_allocation_config_max_memories_per_module_set(pool, 1)
        ffi.wasmtime_pooling_allocation_config_max_tables_per_module_set(pool, TABLE_SLOTS)
        ffi.wasmtime_pooling_allocation_config_max_memory_size_set(pool, pooling.max_memory_bytes)
        ffi.wasmtime_pooling_allocation_config_table_elements_set(pool, pooling.table_elements)
        ffi.wasmtime_pooling_allocation_config_max_core_instance_size_set(pool, MAX_CORE_INSTANCE_BYTES)
        ffi.wasmtime_pooling_allocation_config_linear_memory_keep_resident_set(pool, KEEP_RESIDENT_BYTES)
        ffi.wasmtime_pooling_allocation_config_table_keep_resident_set(pool, KEEP_RESIDENT_BYTES)
        ffi.wasmtime_pooling_allocation_strategy_set(config.ptr(), pool)  # copies the settings
    finally:
        ffi.wasmtime_pooling_allocation_config_delete(pool)
