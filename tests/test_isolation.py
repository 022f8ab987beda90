"""Tenant isolation is enforced by PostgreSQL RLS, whatever the request says."""
from __future__ import annotations

import uuid

from tests.conftest import TENANT_1, TENANT_2, auth

TENANT_2_PRODUCT = "aaaaaaaa-0000-4000-8000-000000000003"


def tenants_of(response) -> set[str]:
    assert response.status_code in (200, 206), response.get_data(as_text=True)
    return {row["tenant_id"] for row in response.get_json()}


def test_reads_see_only_own_tenant(client, tokens) -> None:
    assert tenants_of(client.get("/data/products", headers=auth(tokens["alice"]))) == {TENANT_1}
    assert tenants_of(client.get("/data/products", headers=auth(tokens["charlie"]))) == {TENANT_2}


def test_explicit_cross_tenant_filters_return_nothing(client, tokens) -> None:
    for url in (f"/data/products?tenant_id=eq.{TENANT_2}",
                f"/data/products?id=eq.{TENANT_2_PRODUCT}",
                f"/data/products?or=(tenant_id.eq.{TENANT_2},tenant_id.eq.{TENANT_1})&tenant_id=neq.{TENANT_1}",
                f"/data/products?or=(id.eq.{TENANT_2_PRODUCT},price.gte.0)",
                "/data/products?not.and=(price.gte.0,price.lte.0)"):
        response = client.get(url, headers=auth(tokens["alice"]))
        assert TENANT_2 not in tenants_of(response), url


def test_writes_cannot_reach_other_tenant(client, tokens) -> None:
    marker = f"iso-{uuid.uuid4().hex[:8]}"
    bulk = [{"name": f"{marker}-mine", "price": 1}, {"name": f"{marker}-theirs", "price": 1, "tenant_id": TENANT_2}]
    response = client.post("/data/products", json=bulk, headers=auth(tokens["alice"]))
    assert response.status_code == 403 and response.get_json()["code"] == "42501"
    for who in ("alice", "charlie"):   # nothing was written, for either tenant
        assert client.get(f"/data/products?name=like.{marker}*", headers=auth(tokens[who])).get_json() == []
    patched = client.patch(f"/data/products?id=eq.{TENANT_2_PRODUCT}", json={"price": 0},
                           headers=auth(tokens["alice"], Prefer="return=representation"))
    assert patched.status_code == 200 and patched.get_json() == []
    deleted = client.delete(f"/data/products?id=eq.{TENANT_2_PRODUCT}", headers=auth(tokens["alice"]))
    assert deleted.headers["Content-Range"] == "*/0"
    charlie_view = client.get(f"/data/products?id=eq.{TENANT_2_PRODUCT}", headers=auth(tokens["charlie"]))
    assert charlie_view.get_json()[0]["price"] == 199.99


def test_rows_cannot_be_moved_to_another_tenant(client, tokens) -> None:
    created = client.post("/data/products", json={"name": "mover", "price": 3},
                          headers=auth(tokens["alice"], Prefer="return=representation")).get_json()[0]
    moved = client.patch(f"/data/products?id=eq.{created['id']}", json={"tenant_id": TENANT_2},
                         headers=auth(tokens["alice"]))
    assert moved.status_code == 403
    assert tenants_of(client.get(f"/data/products?id=eq.{created['id']}", headers=auth(tokens["alice"]))) == {TENANT_1}


def test_inserts_take_tenant_from_token(client, tokens) -> None:
    created = client.post("/data/products", json={"name": "no tenant given", "price": 2},
                          headers=auth(tokens["charlie"], Prefer="return=representation"))
    assert created.get_json()[0]["tenant_id"] == TENANT_2


def test_upserts_cannot_reach_other_tenant(client, tokens) -> None:
    marker = f"iso-upsert-{uuid.uuid4().hex[:8]}"
    mine = str(uuid.uuid4())
    bulk = [{"id": mine, "name": f"{marker}-mine", "price": 1},
            {"id": TENANT_2_PRODUCT, "name": f"{marker}-theirs", "price": 0}]
    merged = client.post("/data/products?on_conflict=id", json=bulk,
                         headers=auth(tokens["alice"], Prefer="resolution=merge-duplicates,return=representation"))
    assert merged.status_code == 403 and merged.get_json()["code"] == "42501"
    assert client.get(f"/data/products?name=like.{marker}*", headers=auth(tokens["alice"])).get_json() == []
    ignored = client.post("/data/products", json=bulk,
                          headers=auth(tokens["alice"], Prefer="resolution=ignore-duplicates,return=representation"))
    assert ignored.status_code == 201 and [row["id"] for row in ignored.get_json()] == [mine]
    charlie_view = client.get(f"/data/products?id=eq.{TENANT_2_PRODUCT}", headers=auth(tokens["charlie"]))
    assert charlie_view.get_json()[0]["price"] == 199.99 and charlie_view.get_json()[0]["tenant_id"] == TENANT_2
