"""The function ABI: how a request reaches a function and how its answer
comes back, with every value the guest hands us checked before use.

* Numeric call: ``{"export": "<name>", "args": [...]}`` calls an export with
  i32/i64/f32/f64 parameters; the results are ``{"result": x}`` or
  ``{"results": [...]}``.  A non-finite float result is an error: JSON has no
  NaN or Infinity.
* JSON handler: the request's UTF-8 JSON is written at ``alloc(len)``, then
  ``handle(ptr, len)`` returns ``out_ptr << 32 | out_len``.  Pointers and
  lengths come from guest code, so a range outside the guest's memory is a
  ``function_abi_error`` and the output must be strict JSON.

Both failures are the deployed function's fault, not the gateway's, so they
answer 422 like the other function failures (traps, fuel, memory).
"""
from __future__ import annotations

import math
from typing import Any

import orjson

from gateway.errors import ApiError
from gateway.functions.sandbox import NUMERIC_KINDS, ExportSpec, PreparedModule, Sandbox

_U32 = 0xFFFFFFFF
# Integers a JSON caller may pass: signed or unsigned, wrapped like wasm does.
_INT_RANGES = {"i32": (-(2**31), 2**32 - 1), "i64": (-(2**63), 2**64 - 1)}
_HANDLER_SIGNATURES = {"alloc": (("i32",), ("i32",)), "handle": (("i32", "i32"), ("i64",))}


class FunctionError(ApiError):
    pass


def abi_error(message: str, details: Any = None) -> FunctionError:
    return FunctionError(422, "function_abi_error", message, details=details,
                         hint="see the function ABI in the README: alloc(len)->ptr, handle(ptr,len)->i64 "
                              "(out_ptr << 32 | out_len), both ranges inside the exported memory")


def bad_output(message: str) -> FunctionError:
    return FunctionError(422, "function_bad_output", message)


def is_numeric_call(request: Any) -> bool:
    return isinstance(request, dict) and len(request) == 2 and "export" in request and "args" in request


def handler_exports(prepared: PreparedModule) -> tuple[ExportSpec, ExportSpec, ExportSpec] | None:
    """(memory, alloc, handle) when the module is a JSON handler."""
    exports = prepared.exports
    memory, alloc, handle = exports.get("memory"), exports.get("alloc"), exports.get("handle")
    if memory is None or alloc is None or handle is None or memory.kind != "memory":
        return None
    for spec in (alloc, handle):
        if spec.kind != "function" or (spec.params, spec.results) != _HANDLER_SIGNATURES[spec.name]:
            return None
    return memory, alloc, handle


def _argument(name: str, kind: str, value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FunctionError(400, "bad_arguments", f"'{name}' expects numbers for {kind}, got {value!r}"[:300])
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        if not isinstance(value, int):
            raise FunctionError(400, "bad_arguments", f"'{name}' expects integers for {kind}, got {value!r}")
        if not low <= value <= high:
            raise FunctionError(400, "bad_arguments", f"argument out of range for {kind}: {value}"[:300])
        bits = 32 if kind == "i32" else 64
        return value - (1 << bits) if value >= 1 << (bits - 1) else value  # unsigned to two's complement
    try:
        return float(value)
    except OverflowError:
        raise FunctionError(400, "bad_arguments", f"argument out of range for {kind}") from None


def call_numeric(sandbox: Sandbox, request: dict[str, Any]) -> dict[str, Any]:
    name, args = request["export"], request["args"]
    if not isinstance(name, str) or not isinstance(args, list):
        raise FunctionError(400, "bad_arguments", "'export' must be a string and 'args' a list")
    spec = sandbox.prepared.exports.get(name)
    if spec is None:
        raise FunctionError(400, "unknown_export", f"the module has no export {name[:64]!r}")
    if spec.kind != "function":
        raise FunctionError(400, "unknown_export", f"'{name}' is not a function")
    if len(args) != len(spec.params):
        raise FunctionError(400, "bad_arguments", f"'{name}' takes {len(spec.params)} argument(s) "
                                                  f"{list(spec.params)}, got {len(args)}")
    if not spec.numeric:
        odd = next(k for k in spec.params + spec.results if k not in NUMERIC_KINDS)
        raise FunctionError(400, "bad_arguments", f"'{name}' uses a {odd} value, not callable from JSON")
    results = sandbox.call(spec, [_argument(name, kind, value) for kind, value in zip(spec.params, args, strict=False)])
    for value in results:
        if isinstance(value, float) and not math.isfinite(value):
            raise bad_output(f"'{name}' returned {value}, which JSON cannot represent")
    if len(results) == 1:
        return {"result": results[0]}
    return {"results": results}


def encode_request(request: Any) -> bytes:
    """Compact UTF-8 JSON of the request; 400 for what JSON cannot carry."""
    try:
        return orjson.dumps(request)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise FunctionError(400, "PGRST102", "the request cannot be passed on as JSON", details=str(exc)) from None


def call_handler(sandbox: Sandbox, request: Any) -> Any:
    specs = handler_exports(sandbox.prepared)
    if specs is None:
        raise FunctionError(400, "no_handler",
                            "this module has no JSON handler; call a numeric export with "
                            '{"export": "<name>", "args": [...]}')
    memory, alloc, handle = specs
    payload = encode_request(request)
    pointer = sandbox.call(alloc, [len(payload)])[0] & _U32  # i32 results are signed; pointers are u32
    if not sandbox.write(memory, pointer, payload):
        raise abi_error("alloc returned a range outside the function's memory",
                        details=f"alloc({len(payload)}) = {pointer}, memory is {sandbox.memory_size(memory)} bytes")
    packed = sandbox.call(handle, [pointer, len(payload)])[0]
    out_ptr, out_len = (packed >> 32) & _U32, packed & _U32
    raw = sandbox.read(memory, out_ptr, out_len)
    if raw is None:
        raise abi_error("handle returned a range outside the function's memory",
                        details=f"({out_ptr}, {out_len}), memory is {sandbox.memory_size(memory)} bytes")
    return decode_output(raw)


def decode_output(raw: bytes) -> Any:
    """The handler's answer as strict JSON: orjson refuses NaN, Infinity,
    numbers that overflow a double, invalid UTF-8 and lone surrogates."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_output("the handler's output is not valid UTF-8 JSON") from None
