"""Small WASM calls run inline, within a slice, and give the answer the pool
would give (gateway/functions/inline.py).

The rule is checked in process with a real wasmtime runtime. Without gevent
the pool runs calls on the caller's thread too, so these tests exercise the
placement and the re-run, not the threads. The last test checks the real
gevent gateway through its /metrics.
"""
from __future__ import annotations

import re
from typing import Any

import pytest
import requests

from gateway.functions.abi import FunctionError
from gateway.functions.limits import Limits
from gateway.functions.runtime import FunctionRuntime
from tests.conftest import auth
from wasm.build import example_wasm

SLICE = 200_000
DEFAULTS = Limits(50_000_000, 16 * 1024 * 1024, 1000)
CEILINGS = Limits(1_000_000_000, 128 * 1024 * 1024, 2000)

# Fills 8 MiB per loop turn.  wasmtime charges memory.fill a unit of fuel per
# byte, so with a slice above the call's fuel only the epoch deadline
# (two ticks) can cut it short.
FILL = """(module (memory (export "memory") 129)
  (func (export "fill") (param $n i32) (result i32)
    (block $done
      (loop $again
        (br_if $done (i32.eqz (local.get $n)))
        (memory.fill (i32.const 0) (i32.const 7) (i32.const 8388608))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $again)))
    (i32.const 0)))"""


class Runtime:
    """A runtime that records where each call ran."""

    def __init__(self, inline_fuel: int, tick_ms: int = 10) -> None:
        self.placements: list[str] = []
        self.runtime = FunctionRuntime(defaults=DEFAULTS, ceilings=CEILINGS, tick_ms=tick_ms, threads=2,
                                       pooling=True, inline_fuel=inline_fuel, on_placed=self.placements.append)

    def module(self, wasm: bytes) -> Any:
        return self.runtime.compile(wasm)[1]

    def call(self, module: Any, export: str, *args: int, limits: Limits = DEFAULTS) -> tuple[Any, int | None]:
        """(output, fuel used) or (error code, None)."""
        try:
            result = self.runtime.invoke(module, limits, {"export": export, "args": list(args)}, None)
        except FunctionError as error:
            return error.code, None
        return result.output, result.fuel_used

    def close(self) -> None:
        self.runtime.close()


@pytest.fixture()
def inline() -> Any:
    runtime = Runtime(SLICE)
    yield runtime
    runtime.close()


@pytest.fixture()
def pool_only() -> Any:
    runtime = Runtime(0)
    yield runtime
    runtime.close()


# Slow per unit of fuel: each turn divides by a divisor the compiler cannot
# fold (a 64-bit division takes tens of cycles), 15 units a turn.  40 million
# turns use 600 million fuel, under the ceiling, and took 170 ms on the
# fastest day measured here (2026-11-25): 17 times the epoch deadline of the
# test below.  Its first version filled memory instead, at a unit per byte:
# 948 MB took 43 ms on a slow day and 10.6-11.3 ms on 2026-11-25, at the
# edge of the 5-10 ms deadline, and a full suite run failed on it that day.
CRUNCH = """(module (memory (export "memory") 1)
  (func (export "crunch") (param $n i32) (param $d i32) (result i32)
    (local $x i64)
    (local.set $x (i64.const 0x7fffffffffffffff))
    (block $done
      (loop $again
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $x (i64.or (i64.div_u (local.get $x) (i64.extend_i32_u (local.get $d)))
                              (i64.const 0x4000000000000000)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $again)))
    (i32.wrap_i64 (i64.shr_u (local.get $x) (i64.const 63)))))"""
CRUNCH_TURNS = 40_000_000


def wat_wasm(wat: str) -> bytes:
    import wasmtime

    return bytes(wasmtime.wat2wasm(wat))


def fill_wasm() -> bytes:
    return wat_wasm(FILL)


def test_a_module_runs_in_the_pool_until_seen_small_then_inline(inline) -> None:
    add = inline.module(example_wasm("add"))
    answers = [inline.call(add, "add", 40, 2) for _ in range(3)]
    assert answers == [({"result": 42}, answers[0][1])] * 3
    assert inline.placements == ["pool", "inline", "inline"]


def test_an_attempt_over_the_fuel_slice_runs_again_in_the_pool_with_the_same_answer(inline, pool_only) -> None:
    fib = inline.module(example_wasm("fib"))
    inline.call(fib, "fib", 5)
    assert inline.call(fib, "fib", 5)[0] == {"result": 5}
    assert inline.placements == ["pool", "inline"]
    expected = pool_only.call(pool_only.module(example_wasm("fib")), "fib", 25)
    assert expected[1] > SLICE, "fib(25) must outgrow the slice for this test to mean anything"
    assert inline.call(fib, "fib", 25) == expected            # same answer, same fuel figure
    assert inline.placements[2:] == ["inline_cut", "pool"]
    inline.call(fib, "fib", 5)
    assert inline.placements[4:] == ["pool"], "a module cut once stays in the pool"


def test_the_epoch_cuts_an_inline_attempt_that_fuel_would_let_run() -> None:
    """A slice larger than the call's own fuel: the attempt's two-tick
    deadline (5-10 ms with 5 ms ticks) is what sends a long computation
    (600 million fuel, 170 ms or more) to the pool.  The empty calls before
    it have a whole tick to finish in, so a moment without a CPU does not
    cut them."""
    runtime = Runtime(CEILINGS.fuel, tick_ms=5)
    try:
        crunch = runtime.module(wat_wasm(CRUNCH))
        generous = Limits(CEILINGS.fuel, DEFAULTS.memory_bytes, CEILINGS.timeout_ms)
        assert runtime.call(crunch, "crunch", 0, 3, limits=generous)[0] == {"result": 0}
        assert runtime.call(crunch, "crunch", 0, 3, limits=generous)[0] == {"result": 0}
        assert runtime.placements == ["pool", "inline"]
        output, fuel = runtime.call(crunch, "crunch", CRUNCH_TURNS, 3, limits=generous)
        assert output == {"result": 0} and CRUNCH_TURNS * 15 <= fuel < CEILINGS.fuel
        assert runtime.placements[2:] == ["inline_cut", "pool"]
    finally:
        runtime.close()


@pytest.mark.parametrize("args,limits", [
    ((10,), DEFAULTS),                                        # fits the slice
    ((25,), DEFAULTS),                                        # outgrows it: cut, then the pool
    ((25,), Limits(1_000_000, DEFAULTS.memory_bytes, 1000)),  # out of fuel above the slice
    ((25,), Limits(SLICE // 2, DEFAULTS.memory_bytes, 1000)), # out of fuel within it: final inline
    ((-1,), DEFAULTS),                                        # a trap (unsigned: endless recursion)
])
def test_an_inline_runtime_answers_what_the_pool_answers(inline, pool_only, args, limits) -> None:
    fib = inline.module(example_wasm("fib"))
    inline.call(fib, "fib", 1)                                # now eligible
    reference = pool_only.module(example_wasm("fib"))
    assert inline.call(fib, "fib", *args, limits=limits) == pool_only.call(reference, "fib", *args, limits=limits)
    assert inline.placements[1] == "inline" or inline.placements[1:3] == ["inline_cut", "pool"]


def test_a_negative_inline_slice_is_refused() -> None:
    from gateway.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="APPRUN_FUNCTION_INLINE_FUEL must be 0 .off. or positive"):
        Settings(function_inline_fuel=-1).validate()


def placement_count(gateway_url: str, placement: str) -> float:
    text = requests.get(f"{gateway_url}/metrics", timeout=10).text
    found = re.search(rf'^apprun_wasm_calls_total{{placement="{placement}"}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.mark.usefixtures("wasm_time_settled")
def test_the_gateway_runs_a_small_function_inline_and_counts_it(gateway_url, tokens) -> None:
    """On the real gevent gateway: a freshly deployed module's first call
    goes to the pool, the next ones run inline, and /metrics says so.  A fill
    of 8 MiB costs 8 million fuel: over the slice, so cut and run again."""
    headers = auth(tokens["alice"])
    deployed = requests.put(f"{gateway_url}/functions/inline-probe", data=fill_wasm(),
                            headers={**headers, "Content-Type": "application/wasm"}, timeout=30)
    assert deployed.status_code in (200, 201), deployed.text
    before = {p: placement_count(gateway_url, p) for p in ("pool", "inline", "inline_cut")}
    url = f"{gateway_url}/functions/inline-probe/invoke"
    for args in ([0], [0], [0], [1]):
        answered = requests.post(url, json={"export": "fill", "args": args}, headers=headers, timeout=30)
        assert answered.status_code == 200 and answered.json() == {"result": 0}, answered.text
    after = {p: placement_count(gateway_url, p) for p in ("pool", "inline", "inline_cut")}
    assert {p: after[p] - before[p] for p in after} == {"pool": 2, "inline": 2, "inline_cut": 1}
