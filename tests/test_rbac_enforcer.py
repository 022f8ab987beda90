"""The Casbin authorizer: the compiled matcher decides exactly as casbin
does, and decisions memoised by route rule stay correct per path."""
from __future__ import annotations

import itertools
import uuid
from pathlib import Path

import pytest

from gateway.rbac.enforcer import Authorizer, default_policy_files, rule_is_generic
from tests.conftest import TENANT_1, TENANT_2, auth

ROLES = ("admin", "user", "guest", "")
TENANTS = (TENANT_1, TENANT_2, "*", "other")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "get", "GETX")
PATHS = ("/auth/me", "/auth/register", "/auth/me/x", "/data/products", "/data/projects", "/data/", "/data",
         "/data/a/b", "/functions", "/functions/", "/functions/f1", "/functions/f1/invoke",
         "/functions/f1/invoke/x", "/functions//invoke", "/api/v1/workflows", "/api/v1/workflows/execute",
         "/api/v1/workflows/wf-1", "/api/v1/workflows/wf-1/x", "/metrics", "/", "")


def test_compiled_matcher_decides_as_casbin() -> None:
    authorizer = Authorizer(*default_policy_files())
    assert authorizer.compiled
    for role, tenant, path, method in itertools.product(ROLES, TENANTS, PATHS, METHODS):
        assert authorizer.enforce_uncached(role, tenant, path, method) == \
            authorizer.enforce_with_casbin(role, tenant, path, method), (role, tenant, path, method)


def write_policy(tmp_path: Path, lines: str) -> Path:
    policy = tmp_path / "policy.csv"
    policy.write_text(lines)
    return policy


def test_another_model_is_evaluated_by_casbin(tmp_path) -> None:
    model = tmp_path / "model.conf"
    shipped_model = default_policy_files()[0].read_text()
    model.write_text(shipped_model.replace("regexMatch(r.act, p.act)", "r.act == p.act"))
    authorizer = Authorizer(model, write_policy(tmp_path, "p, user, *, /data/:table, GET\n"))
    assert not authorizer.compiled
    assert authorizer.allowed("user", TENANT_1, "/data/products", "GET", "/data/<table>")
    assert not authorizer.allowed("user", TENANT_1, "/data/products", "GETX", "/data/<table>")


def test_a_line_for_one_path_keeps_decisions_per_path(tmp_path) -> None:
    authorizer = Authorizer(default_policy_files()[0],
                            write_policy(tmp_path, "p, user, *, /data/products, ^DELETE$\n"
                                                   "p, user, *, /data/:table, ^GET$\n"))
    rule = "/data/<table>"
    for _ in range(2):  # the second round answers from the cache
        assert authorizer.allowed("user", TENANT_1, "/data/products", "DELETE", rule)
        assert not authorizer.allowed("user", TENANT_1, "/data/projects", "DELETE", rule)
        assert authorizer.allowed("user", TENANT_1, "/data/projects", "GET", rule)
        assert authorizer.allowed("user", TENANT_1, "/data/products", "GET", rule)


@pytest.mark.parametrize("rule, objects, generic", [
    ("/data/<table>", ["/data/:table", "/auth/me"], True),
    ("/data/<table>", ["/data/products"], False),
    ("/data/<table>", ["/data/*"], False),
    ("/data/<table>", ["/*"], False),
    ("/data/<table>", ["/data/pro.ucts"], False),
    ("/data/<table>", ["/data/x|/data/y/z"], False),
    ("/auth/me", ["/auth/*", "/auth/m.", "/auth/:x"], True),
    ("/data/<table>", ["/data/x:y"], False),
    ("/functions/<name>/invoke", ["/functions/:name/invoke", "/functions/:name", "/data/x"], True),
    ("/files/<path:rest>", ["/files/:name"], False),
    ("/api/v1/workflows/<workflow_id>", ["/api/v1/workflows/execute"], False),
    ("/api/v1/workflows/execute", ["/api/v1/workflows/:id"], True),
    ("/things/<int:id>", ["/things/:id"], True),
])
def test_rule_is_generic(rule: str, objects: list[str], generic: bool) -> None:
    assert rule_is_generic(rule, objects) is generic


def test_decisions_are_memoised_by_route_rule(app, client, tokens) -> None:
    authorizer = app.extensions["apprun.rbac"]
    headers = auth(tokens["bob"])  # a user: may invoke, may not deploy
    client.post(f"/functions/warm-{uuid.uuid4().hex[:6]}/invoke", json={}, headers=headers)
    before = len(authorizer._decisions)  # noqa: SLF001 - the cache's size is the behaviour under test
    for _ in range(20):
        name = f"fn-{uuid.uuid4().hex[:8]}"
        assert client.post(f"/functions/{name}/invoke", json={}, headers=headers).status_code == 404
        assert client.put(f"/functions/{name}", data=b"(module)", headers=headers).status_code == 403
    assert len(authorizer._decisions) - before <= 1  # noqa: SLF001 - the PUT's rule entry
