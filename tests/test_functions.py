"""WASM functions through HTTP: deploy, invoke, traps, limits, tenants, roles."""
from __future__ import annotations

import threading
import time

import pytest
import requests

from tests.conftest import auth, login
from wasm.build import example_wasm

# Calls on the shared gateway start with the seed tenants out of WASM time debt.
pytestmark = pytest.mark.usefixtures("wasm_time_settled")

WASM = "application/wasm"
RUNAWAY_START_DEADLINE_S = 30.0  # generous: only reached when something is broken


def deploy(client, token, name, example, **limits):
    query = "&".join(f"{k}={v}" for k, v in limits.items())
    return client.put(f"/functions/{name}" + (f"?{query}" if query else ""), data=example_wasm(example),
                      content_type=WASM, headers=auth(token))


def invoke(client, token, name, body):
    return client.post(f"/functions/{name}/invoke", json=body, headers=auth(token))


def test_deploy_invoke_numeric_and_json(client, tokens) -> None:
    created = deploy(client, tokens["alice"], "add", "add")
    assert created.status_code in (200, 201)
    meta = created.get_json()
    assert meta["digest"].startswith("sha256:") and {e["name"] for e in meta["exports"]} == {"add", "mul"}
    assert invoke(client, tokens["alice"], "add", {"export": "add", "args": [40, 2]}).get_json() == {"result": 42}
    assert invoke(client, tokens["alice"], "add", {"export": "mul", "args": [1.5, 4]}).get_json() == {"result": 6.0}
    deploy(client, tokens["alice"], "price", "price_tax")
    body = {"items": [{"name": "A", "price_cents": 1000}, {"name": "B", "price_cents": 2599}], "tax_rate_bp": 2000}
    result = invoke(client, tokens["alice"], "price", body)
    assert result.get_json() == {"count": 2, "subtotal_cents": 3599, "tax_cents": 720, "total_cents": 4319}
    assert float(result.headers["X-Function-Duration-Us"]) > 0


def test_redeploy_replaces_version_and_wat_is_accepted(client, tokens) -> None:
    first = deploy(client, tokens["alice"], "swap", "add").get_json()
    wat = (pytest.importorskip("pathlib").Path("wasm/examples/fib.wat")).read_text()
    second = client.put("/functions/swap", data=wat, content_type="text/plain", headers=auth(tokens["alice"]))
    assert second.status_code == 200
    assert second.get_json()["version"] == first["version"] + 1 and second.get_json()["digest"] != first["digest"]
    assert invoke(client, tokens["alice"], "swap", {"export": "fib", "args": [20]}).get_json() == {"result": 6765}
    listed = client.get("/functions", headers=auth(tokens["alice"])).get_json()
    assert "swap" in {f["name"] for f in listed}


@pytest.mark.parametrize("name,body,content_type,status,code", [
    ("Bad Name", b"(module)", "text/plain", 400, "invalid_function_name"),
    ("garbage", b"\0asm\x01\0\0\0\xff", WASM, 400, "invalid_module"),
    ("notwasm", b"hello", WASM, 400, "invalid_module"),
    ("badwat", b"(module", "text/plain", 400, "invalid_module"),
    ("nothing", b"(module)", "text/plain", 400, "missing_exports"),
    ("imports", b'(module (import "env" "f" (func)) (func (export "g")))', "text/plain", 400,
     "unsupported_imports"),
    ("json", b"{}", "application/json", 415, "unsupported_media_type"),
])
def test_bad_modules_are_refused(client, tokens, name, body, content_type, status, code) -> None:
    response = client.put(f"/functions/{name}", data=body, content_type=content_type, headers=auth(tokens["alice"]))
    assert response.status_code == status and response.get_json()["code"] == code


def test_missing_abi_exports_and_limits_validation(client, tokens) -> None:
    response = deploy(client, tokens["alice"], "noabi", "bad_missing_export")
    assert response.status_code == 400 and response.get_json()["code"] == "missing_exports"
    over = deploy(client, tokens["alice"], "greedy", "add", fuel=10**12)
    assert over.status_code == 400 and over.get_json()["code"] == "invalid_limits"
    unknown = deploy(client, tokens["alice"], "greedy", "add", cpus=4)
    assert unknown.status_code == 400


def test_oversized_module_is_413(app, client, tokens) -> None:
    limit = app.config["APPRUN_SETTINGS"].function_max_module_bytes
    response = client.put("/functions/huge", data=b"\0asm" + b"\0" * limit, content_type=WASM,
                          headers=auth(tokens["alice"]))
    assert response.status_code == 413 and response.get_json()["code"] == "payload_too_large"


@pytest.mark.parametrize("example,export,limits,status,code", [
    ("bad_infinite_loop", "spin", {}, 422, "function_out_of_fuel"),
    ("bad_infinite_loop", "spin", {"fuel": 10**9 - 1, "timeout_ms": 200}, 504, "function_timeout"),
    ("bad_memory_bomb", "bomb", {}, 422, "function_memory_limit"),
    ("bad_out_of_bounds", "oob", {}, 422, "function_trap"),
])
def test_traps_have_named_errors(client, tokens, example, export, limits, status, code) -> None:
    name = f"trap-{code.replace('_', '-')}"
    assert deploy(client, tokens["alice"], name, example, **limits).status_code in (200, 201)
    response = invoke(client, tokens["alice"], name, {"export": export, "args": []})
    assert response.status_code == status and response.get_json()["code"] == code


def test_bad_invocations(client, tokens) -> None:
    deploy(client, tokens["alice"], "add", "add")
    cases = [({"export": "sub", "args": [1, 2]}, "unknown_export"), ({"export": "add", "args": [1]}, "bad_arguments"),
             ({"export": "add", "args": [1, "2"]}, "bad_arguments"), ({"anything": 1}, "no_handler")]
    for body, code in cases:
        response = invoke(client, tokens["alice"], "add", body)
        assert response.status_code == 400 and response.get_json()["code"] == code, body


def test_tenants_and_roles(client, tokens) -> None:
    deploy(client, tokens["alice"], "private", "add")
    for method, url in (("get", "/functions/private"), ("post", "/functions/private/invoke"),
                        ("delete", "/functions/private")):
        response = getattr(client, method)(url, json={"export": "add", "args": [1, 2]}, headers=auth(tokens["charlie"]))
        assert response.status_code == 404, (method, url)
    assert "private" not in {f["name"] for f in client.get("/functions", headers=auth(tokens["charlie"])).get_json()}
    assert invoke(client, tokens["bob"], "private", {"export": "add", "args": [1, 2]}).status_code == 200
    assert deploy(client, tokens["bob"], "bobs", "add").status_code == 403
    assert client.delete("/functions/private", headers=auth(tokens["bob"])).status_code == 403
    assert client.delete("/functions/private", headers=auth(tokens["alice"])).status_code == 204
    assert client.get("/functions/private", headers=auth(tokens["alice"])).status_code == 404


def test_runaway_function_does_not_stall_the_gateway(gateway_url) -> None:
    """Against the real gevent server: while a runaway loop (2 s) runs,
    other requests keep being answered.

    Behaviour, not speed: the runaway is known to run once it holds its
    tenant's only function slot (a cheap call of the same tenant is then
    refused: for concurrency after its wait for the slot, or at once for
    time once the runaway has run longer than the tenant's bucket holds),
    and the data requests must be answered while its call is still open.
    A blocked hub would answer them only after the runaway ended, when its
    own answer arrives too.  The runaway is bound by time, not fuel: the
    ``bad_infinite_loop`` example spent its 1e9 fuel in about 1 s on a fast
    day, within the probe's 1 s wait, and the probe then got the slot."""
    from gateway.settings import Settings
    from tests.test_function_fairness import TIME_SPIN

    assert Settings().function_concurrency_free == 1, "the probe below relies on one function slot per free tenant"
    token = login(gateway_url, "alice@test.com")
    headers = auth(token)
    for name, module, content_type, query in (
            ("runaway", TIME_SPIN.encode(), "text/plain", "?fuel=1000000000&timeout_ms=2000"),
            ("runaway-probe", example_wasm("add"), WASM, "")):
        deployed = requests.put(f"{gateway_url}/functions/{name}{query}", data=module,
                                headers={**headers, "Content-Type": content_type}, timeout=30)
        assert deployed.status_code in (200, 201), deployed.text
    outcome = {}

    def run() -> None:
        outcome["response"] = requests.post(f"{gateway_url}/functions/runaway/invoke",
                                            json={"export": "spin", "args": []}, headers=headers, timeout=30)

    runner = threading.Thread(target=run)
    runner.start()
    deadline = time.monotonic() + RUNAWAY_START_DEADLINE_S
    while True:
        probe = requests.post(f"{gateway_url}/functions/runaway-probe/invoke", json={"export": "add", "args": [1, 2]},
                              headers=headers, timeout=30)
        if (probe.status_code == 429 and probe.json()["code"] in ("function_concurrency_limit", "function_time_budget")
                and runner.is_alive()):
            break
        assert probe.status_code == 200, probe.text
        assert runner.is_alive(), f"the runaway ended before it was seen running: {outcome['response'].text}"
        assert time.monotonic() < deadline, f"the runaway did not start within {RUNAWAY_START_DEADLINE_S} s"
    answered_while_running = 0
    while runner.is_alive() and answered_while_running < 20:
        assert requests.get(f"{gateway_url}/data/products?limit=1", headers=headers, timeout=30).status_code == 200
        answered_while_running += runner.is_alive()
    runner.join()
    assert outcome["response"].json()["code"] == "function_timeout"   # its wall-clock limit
    # A stalled hub answers at most the request in flight when the runaway
    # ends before the runner sees its own answer; a free one answers dozens.
    assert answered_while_running >= 5, answered_while_running


STATEFUL = '''(module (memory (export "memory") 1) (global $calls (mut i32) (i32.const 0))
  (func (export "bump") (result i32 i32)
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (i32.store (i32.const 64) (i32.add (i32.load (i32.const 64)) (i32.const 1)))
    (global.get $calls) (i32.load (i32.const 64))))'''


def test_every_call_starts_from_fresh_state(client, tokens) -> None:
    """A global and a memory cell incremented by each call read 1 every time:
    nothing survives between calls (or callers), whatever the call path caches."""
    assert client.put("/functions/stateful", data=STATEFUL, content_type="text/plain",
                      headers=auth(tokens["alice"])).status_code in (200, 201)
    for token in (tokens["alice"], tokens["bob"], tokens["alice"]):
        assert invoke(client, token, "stateful", {"export": "bump", "args": []}).get_json() == {"results": [1, 1]}


def test_integer_arguments_must_fit_their_type(client, tokens) -> None:
    deploy(client, tokens["alice"], "add", "add")
    assert invoke(client, tokens["alice"], "add", {"export": "add", "args": [2**31 - 1, 0]}).get_json() == {
        "result": 2**31 - 1}
    response = invoke(client, tokens["alice"], "add", {"export": "add", "args": [2**40, 1]})
    assert response.status_code == 400 and response.get_json()["code"] == "bad_arguments"
