"""Hostile WASM modules and malformed function requests (issue 11): every one
gets a 4xx with the JSON error shape, and the limits really hold."""
from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from tests.conftest import auth
from wasm.build import example_wasm

# Calls on the shared gateway start with the seed tenants out of WASM time debt.
pytestmark = pytest.mark.usefixtures("wasm_time_settled")

WAT = "text/plain"
MIB = 1024 * 1024

TABLE_GROW = '(module (table 0 funcref) (func (export "f") (param i32) (result i32) ' \
             'ref.null func local.get 0 table.grow 0))'
BIG_TABLE = '(module (table 4000000 funcref) (func (export "f")))'
LOOPING_START = '(module (func $spin (loop br 0)) (start $spin) (func (export "f") (result i32) i32.const 1))'
# A JSON handler whose alloc answers a pointer far outside its one page.
BAD_ALLOC = '''(module (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) i32.const 0x7ffffff0)
  (func (export "handle") (param i32 i32) (result i64) i64.const 0))'''
NEGATIVE_ALLOC = BAD_ALLOC.replace("i32.const 0x7ffffff0", "i32.const -1")
# A handler whose result range ends past its memory.
BAD_OUTPUT_RANGE = '''(module (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) i32.const 1024)
  (func (export "handle") (param i32 i32) (result i64) i64.const 0x0000fff000010000))'''
NON_FINITE = '''(module
  (func (export "nan") (result f64) f64.const nan)
  (func (export "inf") (param f64) (result f64) f64.const -inf)
  (func (export "pair") (result f32 i32) f32.const inf i32.const 1))'''


def json_handler_returning(text: str) -> str:
    """A handler whose output is the given bytes, whatever the input."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'''(module (memory (export "memory") 1)
  (data (i32.const 0) "{escaped}")
  (func (export "alloc") (param i32) (result i32) i32.const 1024)
  (func (export "handle") (param i32 i32) (result i64) i64.const {len(text.encode())}))'''


def deploy_wat(client, token: str, name: str, wat: str, query: str = ""):
    return client.put(f"/functions/{name}{query}", data=wat, content_type=WAT, headers=auth(token))


def invoke(client, token: str, name: str, body):
    return client.post(f"/functions/{name}/invoke", json=body, headers=auth(token))


# NUL bytes and non-ASCII digits are refused at the edge (gateway/edge.py)
# for every route, before the route's own check; either refusal is right.
EDGE_REFUSAL = "invalid_input"


def edge_refused(text: str) -> bool:
    return "%00" in text or "%C2%B2" in text or "%D9%A3" in text


def assert_error(response, status: int, code: str | set[str]) -> dict:
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    codes = {code} if isinstance(code, str) else code
    assert set(body) == {"code", "message", "details", "hint"} and body["code"] in codes, body
    return body


def gateway_process(running_stack) -> psutil.Process:
    return psutil.Process(running_stack[1].processes["gateway"].pid)


def peak_rss_bytes(process: psutil.Process) -> int:
    """The kernel's high-water mark of resident memory (VmHWM), so a
    short-lived allocation between two samples is still seen."""
    total = 0
    for proc in [process, *process.children(recursive=True)]:
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) * 1024
    return total


def test_table_grow_is_bounded_and_gateway_memory_stays_flat(running_stack, gateway_url, tokens) -> None:
    headers = auth(tokens["alice"])
    deployed = requests.put(f"{gateway_url}/functions/table-grow", data=TABLE_GROW,
                            headers={**headers, "Content-Type": WAT}, timeout=30)
    assert deployed.status_code in (200, 201), deployed.text
    gateway = gateway_process(running_stack)
    url = f"{gateway_url}/functions/table-grow/invoke"
    bob = auth(tokens["bob"])
    # Warm up (first call, module cache) before the baseline.
    assert requests.post(url, json={"export": "f", "args": [1]}, headers=bob, timeout=30).status_code == 200
    before = peak_rss_bytes(gateway)
    for _ in range(3):
        # 32M elements would be 256 MiB of table; the store refuses, table.grow answers -1.
        response = requests.post(url, json={"export": "f", "args": [32_000_000]}, headers=bob, timeout=30)
        assert response.status_code == 200 and response.json() == {"result": -1}, response.text
    # A generous bound: the function's limit is 16 MiB, the attack asked for 256 MiB.
    assert peak_rss_bytes(gateway) - before < 64 * MIB


def test_module_declaring_a_huge_table_is_refused_at_deploy(client, tokens) -> None:
    body = assert_error(deploy_wat(client, tokens["alice"], "big-table", BIG_TABLE), 400, "module_exceeds_limits")
    assert "table" in body["details"]
    assert client.get("/functions/big-table", headers=auth(tokens["alice"])).status_code == 404


def test_module_declaring_too_much_memory_is_refused_at_deploy(client, tokens) -> None:
    response = deploy_wat(client, tokens["alice"], "big-memory", '(module (memory 2) (func (export "f")))',
                          "?memory_bytes=65536")
    assert_error(response, 400, "module_exceeds_limits")


def test_looping_start_function_runs_out_of_fuel(client, tokens) -> None:
    assert deploy_wat(client, tokens["alice"], "start-loop", LOOPING_START).status_code in (200, 201)
    assert_error(invoke(client, tokens["bob"], "start-loop", {"export": "f", "args": []}), 422,
                 "function_out_of_fuel")


def test_looping_start_function_hits_its_wall_clock_limit(gateway_url, tokens) -> None:
    headers = auth(tokens["alice"])
    deployed = requests.put(f"{gateway_url}/functions/start-spin?fuel=1000000000&timeout_ms=100",
                            data=LOOPING_START, headers={**headers, "Content-Type": WAT}, timeout=30)
    assert deployed.status_code in (200, 201), deployed.text
    response = requests.post(f"{gateway_url}/functions/start-spin/invoke", json={"export": "f", "args": []},
                             headers=headers, timeout=30)
    # Out of fuel is also acceptable on a machine fast enough to burn 1e9 fuel in 100 ms.
    assert response.status_code in (504, 422) and response.json()["code"] in ("function_timeout",
                                                                             "function_out_of_fuel"), response.text


@pytest.mark.parametrize("name,wat", [("bad-alloc", BAD_ALLOC), ("negative-alloc", NEGATIVE_ALLOC),
                                      ("bad-output-range", BAD_OUTPUT_RANGE)])
def test_bad_pointers_are_abi_errors(client, tokens, name, wat) -> None:
    assert deploy_wat(client, tokens["alice"], name, wat).status_code in (200, 201)
    assert_error(invoke(client, tokens["bob"], name, {"any": "json"}), 422, "function_abi_error")


@pytest.mark.parametrize("export,args", [("nan", []), ("inf", [1.0]), ("pair", [])])
def test_non_finite_numeric_results_are_errors(client, tokens, export, args) -> None:
    assert deploy_wat(client, tokens["alice"], "non-finite", NON_FINITE).status_code in (200, 201)
    assert_error(invoke(client, tokens["bob"], "non-finite", {"export": export, "args": args}), 422,
                 "function_bad_output")


@pytest.mark.parametrize("output", ['{"x":NaN}', '[Infinity]', '{"big":1e999}', '{"x":'])
def test_handler_output_must_be_strict_json(client, tokens, output) -> None:
    assert deploy_wat(client, tokens["alice"], "strict-out", json_handler_returning(output)).status_code in (200, 201)
    assert_error(invoke(client, tokens["bob"], "strict-out", {"q": 1}), 422, "function_bad_output")


# The invoke route refuses what every other route's parser (gateway/bodies.py)
# refuses, including what orjson alone lets through: NUL characters (in a
# value or a key, however deep) and nesting beyond APPRUN_MAX_JSON_DEPTH (64).
@pytest.mark.parametrize("raw", [b'{"v": NaN}', b'[Infinity]', b'{"v": -Infinity}', b'[' * 5000 + b']' * 5000,
                                 b'{"v": "a\\u0000b"}', b'{"a\\u0000": 1}', b'[[{"deep": ["\\u0000"]}]]',
                                 b'[' * 65 + b']' * 65])
def test_request_bodies_must_be_strict_json(client, tokens, raw) -> None:
    assert client.put("/functions/echo", data=example_wasm("echo"), content_type="application/wasm",
                      headers=auth(tokens["alice"])).status_code in (200, 201)
    response = client.post("/functions/echo/invoke", data=raw, content_type="application/json",
                           headers=auth(tokens["bob"]))
    assert response.status_code == 400, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"code", "message", "details", "hint"} and body["code"] == "PGRST102"


def test_request_bodies_at_the_depth_limit_and_with_escapes_are_invoked(client, tokens) -> None:
    """The other side of the bound: 64 levels, a non-NUL escape and an
    escaped backslash before "u0000" (the text \\u0000, not a NUL) pass."""
    assert client.put("/functions/echo", data=example_wasm("echo"), content_type="application/wasm",
                      headers=auth(tokens["alice"])).status_code in (200, 201)
    for raw in (b'[' * 64 + b']' * 64, b'{"v": "caf\\u00e9 \\\\u0000"}'):
        response = client.post("/functions/echo/invoke", data=raw, content_type="application/json",
                               headers=auth(tokens["bob"]))
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json() == json.loads(raw)


@pytest.mark.parametrize("method,path", [
    ("get", "/functions/a%00b"), ("delete", "/functions/a%00b"), ("put", "/functions/a%00b"),
    ("post", "/functions/a%00b/invoke"), ("get", "/functions/" + "x" * 65), ("post", "/functions/%C3%A9/invoke"),
])
def test_malformed_names_are_400(client, tokens, method, path) -> None:
    response = getattr(client, method)(path, data=b"(module)", content_type=WAT, headers=auth(tokens["alice"]))
    assert_error(response, 400, EDGE_REFUSAL if edge_refused(path) else "invalid_function_name")


@pytest.mark.parametrize("query", ["?fuel=%C2%B2", "?memory_bytes=%D9%A3", "?timeout_ms=" + "9" * 5000,
                                   "?fuel=-1", "?fuel=%00", "?timeout_ms="])
def test_malformed_limits_are_400(client, tokens, query) -> None:
    response = client.put(f"/functions/limits{query}", data=example_wasm("add"), content_type="application/wasm",
                          headers=auth(tokens["alice"]))
    assert_error(response, 400, EDGE_REFUSAL if edge_refused(query) else "invalid_limits")


def test_nul_in_export_name_is_400(client, tokens) -> None:
    client.put("/functions/add", data=example_wasm("add"), content_type="application/wasm",
               headers=auth(tokens["alice"]))
    # Refused with the body, as on every other route (gateway/bodies.py), before any export lookup.
    assert_error(invoke(client, tokens["bob"], "add", {"export": "add\u0000", "args": [1, 2]}), 400, "PGRST102")


def _thread_nice_values(process: psutil.Process) -> dict[int, int]:
    """Nice value of each thread (task) of ``process``, from /proc."""
    values = {}
    for task in Path(f"/proc/{process.pid}/task").iterdir():
        # Field 19 of stat is nice; the command name (field 2) may hold spaces.
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        values[int(task.name)] = int(fields[16])
    return values


def test_wasm_threads_run_below_the_request_path(running_stack, gateway_url, tokens) -> None:
    """A spinning call takes the CPU other tenants' requests leave, not
    theirs: the pool's threads run at APPRUN_FUNCTION_THREAD_NICE (10), the
    gateway's own thread (the hub that serves every request) at 0."""
    from gateway.settings import Settings

    deployed = requests.put(f"{gateway_url}/functions/nice-add", data=example_wasm("add"), timeout=30,
                            headers={**auth(tokens["alice"]), "Content-Type": "application/wasm"})
    assert deployed.status_code in (200, 201), deployed.text
    answer = requests.post(f"{gateway_url}/functions/nice-add/invoke", json={"export": "add", "args": [1, 2]},
                           headers=auth(tokens["bob"]), timeout=30)
    assert answer.status_code == 200, answer.text
    gateway = gateway_process(running_stack)
    nice = _thread_nice_values(gateway)
    assert nice[gateway.pid] == 0
    assert Settings().function_thread_nice in set(nice.values()) - {0}, nice


def _on_a_new_thread(fn: Callable[[], Any]) -> Any:
    """``fn()`` on a fresh thread (a pool thread's first call), its result back here."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(fn()))
    thread.start()
    thread.join(30)
    return result[0]


def test_a_pool_thread_lowers_its_priority_on_its_first_call_only(monkeypatch) -> None:
    """One getpriority per pool thread, not one per WASM call; each new
    thread sets its own (Linux keeps a nice value per thread)."""
    from gateway import native

    looked_up: list[int] = []
    getpriority = os.getpriority
    monkeypatch.setattr(os, "getpriority", lambda *args: looked_up.append(1) or getpriority(*args))
    start = os.getpriority(os.PRIO_PROCESS, 0)
    looked_up.clear()

    def three_calls() -> list[Any]:
        return [native._at_nice(10, lambda x: x + 1, n) for n in range(3)] + [getpriority(os.PRIO_PROCESS, 0)]

    assert _on_a_new_thread(three_calls) == [1, 2, 3, max(start, 10)]
    assert len(looked_up) == 1
    assert _on_a_new_thread(three_calls) == [1, 2, 3, max(start, 10)]
    assert len(looked_up) == 2
    assert os.getpriority(os.PRIO_PROCESS, 0) == start  # this thread was left alone


def test_a_pool_thread_that_may_not_lower_its_priority_keeps_it_and_runs_the_call(monkeypatch) -> None:
    from gateway import native

    def refused(*args: int) -> None:
        raise PermissionError("not allowed")

    monkeypatch.setattr(os, "setpriority", refused)
    start = os.getpriority(os.PRIO_PROCESS, 0)
    assert _on_a_new_thread(lambda: [native._at_nice(start + 5, lambda: "ran") for _ in range(2)]
                            + [os.getpriority(os.PRIO_PROCESS, 0)]) == ["ran", "ran", start]
