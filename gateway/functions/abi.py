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
import wasmtime

from gateway.errors import ApiError

_INT_TYPES = {"i32", "i64"}
_FLOAT_TYPES = {"f32", "f64"}
_U32 = 0xFFFFFFFF


class FunctionError(ApiError):
    pass


def abi_error(message: str, details: Any = None) -> FunctionError:
    return FunctionError(422, "function_abi_error", message, details=details,
                         hint="see the function ABI in the README: alloc(len)->ptr, handle(ptr,len)->i64 "
                              "(out_ptr << 32 | out_len), both ranges inside the exported memory")


def bad_output(message: str) -> FunctionError:
    return FunctionError(422, "function_bad_output", message)


def is_numeric_call(request: Any) -> bool:
    return isinstance(request, dict) and set(request) == {"export", "args"}


def _finite_results(name: str, values: list[Any]) -> list[Any]:
    for value in values:
        if isinstance(value, float) and not math.isfinite(value):
            raise bad_output(f"'{name}' returned {value}, which JSON cannot represent")
    return values


def call_numeric(store: wasmtime.Store, exports: Any, request: dict[str, Any]) -> dict[str, Any]:
    name, args = request["export"], request["args"]
    if not isinstance(name, str) or not isinstance(args, list):
        raise FunctionError(400, "bad_arguments", "'export' must be a string and 'args' a list")
    try:
        func = exports[name]
    except KeyError:
        raise FunctionError(400, "unknown_export", f"the module has no export {name[:64]!r}") from None
    if not isinstance(func, wasmtime.Func):
        raise FunctionError(400, "unknown_export", f"'{name}' is not a function")
    func_type = func.type(store)
    params = [str(p) for p in func_type.params]
    if len(args) != len(params):
        raise FunctionError(400, "bad_arguments", f"'{name}' takes {len(params)} argument(s) {params}, "
                                                  f"got {len(args)}")
    for value, kind in zip(args, params):
        if kind in _INT_TYPES and (isinstance(value, bool) or not isinstance(value, int)):
            raise FunctionError(400, "bad_arguments", f"'{name}' expects integers for {kind}, got {value!r}")
        if kind in _FLOAT_TYPES and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise FunctionError(400, "bad_arguments", f"'{name}' expects numbers for {kind}, got {value!r}")
        if kind not in _INT_TYPES | _FLOAT_TYPES:
            raise FunctionError(400, "bad_arguments", f"'{name}' takes a {kind} parameter, not callable from JSON")
    try:
        result = func(store, *[float(v) if k in _FLOAT_TYPES else v for v, k in zip(args, params)])
    except (OverflowError, TypeError) as exc:
        raise FunctionError(400, "bad_arguments", f"argument out of range: {exc}") from None
    if isinstance(result, (tuple, list)):
        return {"results": _finite_results(name, list(result))}
    return {"result": _finite_results(name, [result])[0]}


def encode_request(request: Any) -> bytes:
    """Compact UTF-8 JSON of the request; 400 for what JSON cannot carry."""
    try:
        return orjson.dumps(request)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise FunctionError(400, "PGRST102", "the request cannot be passed on as JSON", details=str(exc)) from None


def call_handler(store: wasmtime.Store, exports: Any, request: Any) -> Any:
    try:
        memory, alloc, handle = exports["memory"], exports["alloc"], exports["handle"]
    except KeyError:
        raise FunctionError(400, "no_handler",
                            "this module has no JSON handler; call a numeric export with "
                            '{"export": "<name>", "args": [...]}') from None
    payload = encode_request(request)
    pointer = alloc(store, len(payload)) & _U32  # an i32 result is signed; guest pointers are u32
    if pointer + len(payload) > memory.data_len(store):
        raise abi_error("alloc returned a range outside the function's memory",
                        details=f"alloc({len(payload)}) = {pointer}, memory is {memory.data_len(store)} bytes")
    memory.write(store, payload, pointer)
    packed = handle(store, pointer, len(payload))
    out_ptr, out_len = (packed >> 32) & _U32, packed & _U32
    size = memory.data_len(store)
    if out_ptr + out_len > size:
        raise abi_error("handle returned a range outside the function's memory",
                        details=f"({out_ptr}, {out_len}), memory is {size} bytes")
    return decode_output(memory.read(store, out_ptr, out_ptr + out_len))


def decode_output(raw: bytes | bytearray) -> Any:
    """The handler's answer as strict JSON: orjson refuses NaN, Infinity,
    numbers that overflow a double, invalid UTF-8 and lone surrogates."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_output("the handler's output is not valid UTF-8 JSON") from None
