"""The gateway's own CPU per request, in process: the Flask app called as a
WSGI callable (no sockets, no gevent), timed with this process's CPU clock.

Whole-stack figures (bench/cost.py) move by 10-20 % between runs on a
shared 2-core machine; this one moves by a few percent, so it is the one
that tells whether a small lever on the Python path (hooks, JSON encoding,
the authorizer) pays.  Compare two checkouts against the same running
stack: ``python bench/wsgi_cost.py --state-dir DIR --code <checkout>``.
Without ``--state-dir`` it starts its own embedded stack.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cost import started_stack  # noqa: E402
from wasm.build import example_wasm  # noqa: E402
from wasm.samples import PRICE_INPUT  # noqa: E402

WARMUP_CALLS = 300
REPEATS = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", help="use the running stack of this state directory")
    parser.add_argument("--calls", type=int, default=2000, help="calls per repeat (default 2000)")
    parser.add_argument("--code", help="import the gateway from this checkout (default: this one)")
    parser.add_argument("--gateway-workers", type=int, default=1, help=argparse.SUPPRESS)
    args, _unknown = parser.parse_known_args(argv)  # ./dev bench passes the same arguments to every script
    return args


def wsgi_caller(app: Any, path: str, method: str = "GET", headers: dict[str, str] | None = None,
                body: bytes = b"") -> Callable[[], str]:
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(path=path, method=method, headers=headers or {}).get_environ()
    environ["CONTENT_LENGTH"] = str(len(body))

    def call() -> str:
        statuses: list[str] = []
        request_environ = dict(environ, **{"wsgi.input": io.BytesIO(body)})
        for _chunk in app(request_environ, lambda status, _headers, _exc=None: statuses.append(status)):
            pass
        return statuses[0]

    return call


def cpu_us_per_call(call: Callable[[], str], calls: int) -> float:
    """Fastest of REPEATS runs: the least disturbed by other processes."""
    for _ in range(WARMUP_CALLS):
        status = call()
        if not status.startswith("2"):
            raise RuntimeError(f"request answered {status}")
    best = float("inf")
    for _ in range(REPEATS):
        started = time.process_time()
        for _ in range(calls):
            call()
        best = min(best, (time.process_time() - started) / calls * 1e6)
    return best


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.code:
        sys.path.insert(0, str(Path(args.code).resolve()))
        # The stack's modules already imported this checkout's settings:
        # forget its gateway package so that create_app comes from --code.
        for name in [module for module in sys.modules if module == "gateway" or module.startswith("gateway.")]:
            del sys.modules[name]
    with started_stack(args) as (state, seed_password):
        from gateway.app import create_app

        secrets = json.loads((Path(state.state_dir) / "secrets.json").read_text())
        # No Temporal: the workflow routes are not measured here.
        app = create_app({"database_url": state.database_url, "jwt_secret": secrets["jwt_secret"],
                          "temporal_address": ""})
        login = json.dumps({"email": "alice@test.com", "password": seed_password}).encode()
        client = app.test_client()
        token = client.post("/auth/login", data=login, content_type="application/json").get_json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        deployed = client.put("/functions/wsgi-cost-price", data=example_wasm("price_tax"),
                              content_type="application/wasm", headers=bearer)
        if deployed.status_code not in (200, 201):
            raise RuntimeError(f"deploying the WASM example answered {deployed.status_code}")
        price_body = json.dumps(PRICE_INPUT).encode()
        kinds = {
            "healthz": wsgi_caller(app, "/healthz"),
            "auth_me": wsgi_caller(app, "/auth/me", headers=bearer),
            "data_list": wsgi_caller(app, "/data/products", headers=bearer),
            "data_count_exact": wsgi_caller(app, "/data/products?select=id,name,price&price=gte.1&order=name.asc"
                                                 "&limit=10", headers={**bearer, "Prefer": "count=exact"}),
            "wasm_invoke": wsgi_caller(app, "/functions/wsgi-cost-price/invoke", method="POST",
                                       headers={**bearer, "Content-Type": "application/json"}, body=price_body),
        }
        import gateway

        print(f"gateway code: {os.path.dirname(gateway.__file__)}")
        print(f"{'request':<18} {'CPU us per request (in process, no HTTP)':>42}")
        for name, call in kinds.items():
            print(f"{name:<18} {cpu_us_per_call(call, args.calls):>42.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
