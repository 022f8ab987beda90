"""Auth checks per second in process, uncached: a JWT signature check
(``TokenService._decode``, what a cache miss pays) plus a Casbin decision
(``Authorizer.enforce_uncached``: no decision cache), next to each part
alone and to casbin's own expression engine.  Target: >= 10,000 checks/s.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.auth.tokens import TokenService  # noqa: E402
from gateway.rbac.enforcer import Authorizer, default_policy_files  # noqa: E402
from gateway.settings import Settings  # noqa: E402

SECONDS = 1.5
TENANT = "11111111-1111-1111-1111-111111111111"
# What the kpi personas ask most, allowed and denied.
CHECKS = (("user", "/data/products", "GET"), ("user", "/functions/price-tax/invoke", "POST"),
          ("user", "/api/v1/workflows/wf-1", "GET"), ("user", "/data/products", "DELETE"))


def rate(check: Callable[[], object]) -> float:
    done = 0
    started = time.perf_counter()
    deadline = started + SECONDS
    while time.perf_counter() < deadline:
        for _ in range(200):
            check()
        done += 200
    return done / (time.perf_counter() - started)


def main() -> int:
    tokens = TokenService(Settings.from_mapping({"jwt_secret": "bench-secret-" + "x" * 32}))
    token = tokens.issue("u-1", TENANT, "user", "bob@test.com")
    authorizer = Authorizer(*default_policy_files())
    counter = [0]

    def next_check() -> tuple[str, str, str]:
        counter[0] += 1
        return CHECKS[counter[0] % len(CHECKS)]

    def full_check() -> None:
        claims = tokens._decode(token)  # noqa: SLF001 - uncached on purpose
        role, path, method = next_check()
        authorizer.enforce_uncached(claims["role"], claims["tenant_id"], path, method)

    for _ in range(2000):  # warm-up: first calls pay for imports and caches
        full_check()
    figures = {
        "JWT verify (HS256, uncached)": rate(lambda: tokens._decode(token)),  # noqa: SLF001
        "Casbin decision, compiled matcher": rate(lambda: authorizer.enforce_uncached("user", TENANT,
                                                                                      *next_check()[1:])),
        "Casbin decision, casbin's engine": rate(lambda: authorizer.enforce_with_casbin("user", TENANT,
                                                                                        *next_check()[1:])),
        "JWT verify + Casbin (uncached)": rate(full_check),
    }
    print(f"{'auth check in process':<36} {'per s':>10} {'us each':>8}   target: JWT + Casbin >= 10,000/s")
    for name, per_s in figures.items():
        print(f"{name:<36} {per_s:>10,.0f} {1e6 / per_s:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
