"""WASM cold start and hot execution, in process (no HTTP), next to the seed KPIs.

Cold: compile + instantiate, and deserialize (cached artifact) + instantiate.
Hot: fresh store + instantiate + call (what every invocation pays).
Medians of repeated runs; this machine is noisy.  Issue 9's target: the
price_tax hot median <= 100 us (192 us when filed; 138 us before the
C-level call path in gateway/functions/sandbox.py, 54 us after, same run
conditions).  Run it under the shared lock:
``flock /tmp/apprun-load.lock python bench/wasm_bench.py``.
"""
from __future__ import annotations

import statistics
import tempfile
import time

import wasmtime

from gateway.functions.runtime import FunctionRuntime, Limits
from wasm.build import example_wasm

RUNS = 200
CALLS = {"add": {"export": "add", "args": [1, 2]}, "fib": {"export": "fib", "args": [20]},
         "price_tax": {"items": [{"name": "A", "price_cents": 1000}], "tax_rate_bp": 2000}}


def main() -> None:
    limits = Limits(1_000_000_000, 16 * 1024 * 1024, 1000)
    with tempfile.TemporaryDirectory() as cache:
        runtime = FunctionRuntime(defaults=limits, ceilings=limits, tick_ms=10, threads=1, cache_dir=cache)
        print(f"{'module':<10} {'compile+inst ms':>16} {'deser+inst ms':>14} {'hot call us':>12}   seed KPI: cold < 100 ms, hot < 1000 us")
        for name, request in CALLS.items():
            wasm = example_wasm(name)
            compile_ms, deser_ms, hot_us = [], [], []
            for _ in range(20):
                started = time.perf_counter()
                module = wasmtime.Module(runtime.engine, wasm)
                wasmtime.Instance(wasmtime.Store(runtime.engine), module, [])
                compile_ms.append((time.perf_counter() - started) * 1000)
                blob = module.serialize()
                started = time.perf_counter()
                module2 = wasmtime.Module.deserialize(runtime.engine, blob)
                wasmtime.Instance(wasmtime.Store(runtime.engine), module2, [])
                deser_ms.append((time.perf_counter() - started) * 1000)
            _digest, module, _ = runtime.compile(wasm)
            for _ in range(RUNS):
                hot_us.append(runtime.invoke(module, limits, request, None).duration_us)
            print(f"{name:<10} {statistics.median(compile_ms):>16.3f} {statistics.median(deser_ms):>14.3f} "
                  f"{statistics.median(hot_us):>12.1f}")
        runtime.close()


if __name__ == "__main__":
    main()
