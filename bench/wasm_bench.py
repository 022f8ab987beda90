"""WASM cold start and hot execution, in process (no HTTP), next to the seed KPIs.

Cold: compile + instantiate, and deserialize (cached artifact) + instantiate.
Hot: fresh store + instantiate + call (what every invocation pays), back to
back, and after 2 ms of idle between calls (the gateway's usual case: the
CPU's caches and clocks have cooled down while the HTTP request travelled),
for wasmtime's on-demand and pooling instance allocators.
Medians of repeated runs; this machine is noisy.

Issue 9's target: the price_tax hot median <= 100 us (192 us when filed).
On 2026-11-23, back to back, on-demand allocator: 138 us before the C-level
call path in gateway/functions/sandbox.py, 53 us after; after idle: ~150 us
on-demand, ~90 us pooling.  Run it under the shared lock:
``flock /tmp/apprun-load.lock python bench/wasm_bench.py``.
"""
from __future__ import annotations

import statistics
import tempfile
import time

import wasmtime

from gateway.functions.runtime import FunctionRuntime, Limits
from wasm.build import example_wasm

RUNS = 400
IDLE_RUNS = 300
IDLE_S = 0.002
CALLS = {"add": {"export": "add", "args": [1, 2]}, "fib": {"export": "fib", "args": [20]},
         "price_tax": {"items": [{"name": "A", "price_cents": 1000}], "tax_rate_bp": 2000}}


def cold_ms(engine: wasmtime.Engine, wasm: bytes) -> tuple[float, float]:
    compile_ms, deser_ms = [], []
    for _ in range(20):
        started = time.perf_counter()
        module = wasmtime.Module(engine, wasm)
        wasmtime.Instance(wasmtime.Store(engine), module, [])
        compile_ms.append((time.perf_counter() - started) * 1000)
        blob = module.serialize()
        started = time.perf_counter()
        module2 = wasmtime.Module.deserialize(engine, blob)
        wasmtime.Instance(wasmtime.Store(engine), module2, [])
        deser_ms.append((time.perf_counter() - started) * 1000)
    return statistics.median(compile_ms), statistics.median(deser_ms)


def main() -> None:
    limits = Limits(1_000_000_000, 16 * 1024 * 1024, 1000)
    print(f"{'module':<10} {'allocator':<10} {'compile+inst ms':>16} {'deser+inst ms':>14} {'hot us':>8} "
          f"{'hot after idle us':>18}   seed KPI: cold < 100 ms, hot < 1000 us")
    for pooling in (False, True):
        with tempfile.TemporaryDirectory() as cache:
            runtime = FunctionRuntime(defaults=limits, ceilings=limits, tick_ms=10, threads=1, cache_dir=cache,
                                      pooling=pooling)
            for name, request in CALLS.items():
                wasm = example_wasm(name)
                compile_ms, deser_ms = cold_ms(runtime.engine, wasm)
                _digest, module, _ = runtime.compile(wasm)
                hot_us = [runtime.invoke(module, limits, request, None).duration_us for _ in range(RUNS)]
                idle_us = []
                for _ in range(IDLE_RUNS):
                    time.sleep(IDLE_S)
                    idle_us.append(runtime.invoke(module, limits, request, None).duration_us)
                print(f"{name:<10} {'pooling' if pooling else 'on-demand':<10} {compile_ms:>16.3f} {deser_ms:>14.3f} "
                      f"{statistics.median(hot_us):>8.1f} {statistics.median(idle_us):>18.1f}")
            runtime.close()


if __name__ == "__main__":
    main()
