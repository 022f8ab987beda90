"""The data API against real PostgreSQL: grammar, paging, counts, errors."""
from __future__ import annotations

import uuid

import pytest

from tests.conftest import TENANT_1, auth


@pytest.fixture()
def fresh_products(client, tokens):
    """Five products with a unique name prefix in tenant 1."""
    prefix = f"grammar-{uuid.uuid4().hex[:8]}"
    rows = [{"name": f"{prefix}-{i}", "price": price} for i, price in enumerate([5, 10, 20, 40, 80])]
    response = client.post("/data/products", json=rows,
                           headers=auth(tokens["alice"], Prefer="return=representation"))
    assert response.status_code == 201, response.get_data(as_text=True)
    return prefix, response.get_json()


def names(response) -> list[str]:
    assert response.status_code in (200, 206), response.get_data(as_text=True)
    return [row["name"] for row in response.get_json()]


@pytest.mark.parametrize("expression,expected", [
    ("gt.20", [3, 4]), ("gte.20", [2, 3, 4]), ("lt.10", [0]), ("lte.10", [0, 1]),
    ("eq.40", [3]), ("neq.40", [0, 1, 2, 4]), ("in.(5,80)", [0, 4]), ("not.in.(5,80)", [1, 2, 3]),
    ("not.gt.10", [0, 1]),
])
def test_comparison_operators(client, tokens, fresh_products, expression, expected) -> None:
    prefix, _ = fresh_products
    response = client.get(f"/data/products?name=like.{prefix}*&price={expression}&order=price",
                          headers=auth(tokens["alice"]))
    assert names(response) == [f"{prefix}-{i}" for i in expected]


def test_like_ilike_is(client, tokens, fresh_products) -> None:
    prefix, _ = fresh_products
    upper = prefix.upper()
    assert len(names(client.get(f"/data/products?name=ilike.{upper}*", headers=auth(tokens["alice"])))) == 5
    assert names(client.get(f"/data/products?name=like.{upper}*", headers=auth(tokens["alice"]))) == []
    assert names(client.get(f"/data/products?name=like.{prefix}*&price=is.null",
                            headers=auth(tokens["alice"]))) == []
    assert len(names(client.get(f"/data/products?name=like.{prefix}*&price=not.is.null",
                                headers=auth(tokens["alice"])))) == 5


def test_or_and_ordering(client, tokens, fresh_products) -> None:
    prefix, _ = fresh_products
    response = client.get(f"/data/products?name=like.{prefix}*&or=(price.lt.10,price.gt.50)&order=price.desc",
                          headers=auth(tokens["alice"]))
    assert names(response) == [f"{prefix}-4", f"{prefix}-0"]


def test_paging_counts_and_range(client, tokens, fresh_products) -> None:
    prefix, _ = fresh_products
    url = f"/data/products?name=like.{prefix}*&order=price&select=name,cost:price"
    response = client.get(url + "&limit=2&offset=1", headers=auth(tokens["alice"], Prefer="count=exact"))
    assert response.status_code == 206
    assert response.headers["Content-Range"] == "1-2/5"
    assert response.get_json() == [{"name": f"{prefix}-1", "cost": 10}, {"name": f"{prefix}-2", "cost": 20}]
    ranged = client.get(url, headers=auth(tokens["alice"], Range="3-9"))
    assert ranged.headers["Content-Range"] == "3-4/*"
    assert [r["name"] for r in ranged.get_json()] == [f"{prefix}-3", f"{prefix}-4"]
    beyond = client.get(url + "&offset=50", headers=auth(tokens["alice"], Prefer="count=exact"))
    assert beyond.status_code == 416 and beyond.get_json()["code"] == "PGRST103"


def test_patch_and_delete_with_representation(client, tokens, fresh_products) -> None:
    _, rows = fresh_products
    target = rows[0]["id"]
    patched = client.patch(f"/data/products?id=eq.{target}", json={"price": 6},
                           headers=auth(tokens["alice"], Prefer="return=representation"))
    assert patched.status_code == 200 and patched.get_json()[0]["price"] == 6
    deleted = client.delete(f"/data/products?id=eq.{target}", headers=auth(tokens["alice"]))
    assert deleted.status_code == 204 and deleted.headers["Content-Range"] == "*/1"
    assert client.get(f"/data/products?id=eq.{target}", headers=auth(tokens["alice"])).get_json() == []


def test_unfiltered_mutations_are_refused(client, tokens, fresh_products) -> None:
    for method in ("patch", "delete"):
        response = getattr(client, method)("/data/products", json={"price": 1}, headers=auth(tokens["alice"]))
        assert response.status_code == 400 and response.get_json()["code"] == "21000"
    prefix, _ = fresh_products
    assert len(names(client.get(f"/data/products?name=like.{prefix}*", headers=auth(tokens["alice"])))) == 5


def test_sql_looking_values_stay_values(client, tokens) -> None:
    evil = "x'; DROP TABLE products; --"
    created = client.post("/data/products", json={"name": evil, "price": 1},
                          headers=auth(tokens["alice"], Prefer="return=representation"))
    assert created.status_code == 201 and created.get_json()[0]["name"] == evil
    found = client.get("/data/products", query_string={"name": f"eq.{evil}"}, headers=auth(tokens["alice"]))
    assert [row["name"] for row in found.get_json()] == [evil]
    assert client.get("/data/products?limit=1", headers=auth(tokens["alice"])).status_code == 200


@pytest.mark.parametrize("url,status,code", [
    ("/data/nope", 404, "PGRST205"),
    ("/data/users", 404, "PGRST205"),          # secrets are not exposed
    ("/data/products?bogus=eq.1", 400, "42703"),
    ("/data/products?select=bogus", 400, "42703"),
    ("/data/products?order=bogus", 400, "42703"),
    ("/data/products?price=approx.1", 400, "PGRST100"),
    ("/data/products?price=gt.abc", 400, "22P02"),
    ("/data/products?id=eq.not-a-uuid", 400, "22P02"),
])
def test_bad_queries_have_postgrest_errors(client, tokens, url, status, code) -> None:
    response = client.get(url, headers=auth(tokens["alice"]))
    assert response.status_code == status
    body = response.get_json()
    assert set(body) == {"code", "message", "details", "hint"} and body["code"] == code


def test_bad_bodies_write_nothing(client, tokens) -> None:
    marker = f"bulk-{uuid.uuid4().hex[:8]}"
    bad_bulk = [{"name": f"{marker}-ok", "price": 1}, {"name": f"{marker}-bad", "price": "not a number"}]
    response = client.post("/data/products", json=bad_bulk, headers=auth(tokens["alice"]))
    assert response.status_code == 400
    assert client.get(f"/data/products?name=like.{marker}*", headers=auth(tokens["alice"])).get_json() == []
    for body, content_type, status in [("{not json", "application/json", 400), ("name=x", "text/plain", 415),
                                       ("[]", "application/json", 400), ("[1]", "application/json", 400)]:
        response = client.post("/data/products", data=body, content_type=content_type,
                               headers=auth(tokens["alice"]))
        assert response.status_code == status
        assert set(response.get_json()) == {"code", "message", "details", "hint"}


def test_read_only_relations(client, tokens) -> None:
    response = client.post("/data/tenant_stats", json={"name": "x"}, headers=auth(tokens["alice"]))
    assert response.status_code == 405
    stats = client.get("/data/tenant_stats", headers=auth(tokens["alice"])).get_json()
    assert [row["tenant_id"] for row in stats] == [TENANT_1]


def test_accept_negotiation(client, tokens, fresh_products) -> None:
    prefix, _ = fresh_products
    url = f"/data/products?name=eq.{prefix}-0&select=name,price,missing:created_at"
    refused = client.get(url, headers=auth(tokens["alice"], Accept="application/xml"))
    assert refused.status_code == 406 and refused.get_json()["code"] == "PGRST107"
    browser = client.get(url, headers=auth(tokens["alice"], Accept="text/html,*/*;q=0.8"))
    assert browser.status_code == 200 and browser.get_json()[0]["name"] == f"{prefix}-0"
    csv_first = client.get(url, headers=auth(tokens["alice"], Accept="application/json;q=0.5, text/csv"))
    assert csv_first.content_type.startswith("text/csv") and csv_first.get_data(as_text=True).startswith("name,")
    created = client.post("/data/projects?select=name,owner_email", json={"name": prefix},
                          headers=auth(tokens["alice"], Prefer="return=representation",
                                       Accept="application/vnd.pgrst.object+json;nulls=stripped"))
    assert created.status_code == 201 and created.get_json() == {"name": prefix}  # owner_email NULL: stripped


def test_max_affected_with_strict_handling_rolls_back(client, tokens, fresh_products) -> None:
    prefix, _ = fresh_products
    strict = auth(tokens["alice"], Prefer="handling=strict, max-affected=2")
    response = client.delete(f"/data/products?name=like.{prefix}*&price=lt.30", headers=strict)
    assert response.status_code == 400 and response.get_json()["code"] == "PGRST124"
    assert len(names(client.get(f"/data/products?name=like.{prefix}*", headers=auth(tokens["alice"])))) == 5
    allowed = client.delete(f"/data/products?name=like.{prefix}*&price=lt.10", headers=strict)
    assert allowed.status_code == 204 and allowed.headers["Content-Range"] == "*/1"
    unknown = client.get("/data/products?limit=1", headers=auth(tokens["alice"], Prefer="handling=strict, nope=1"))
    assert unknown.status_code == 400 and unknown.get_json()["code"] == "PGRST122"


@pytest.mark.parametrize("method,url,prefer", [
    ("get", "/data/products?columns=name", ""),
    ("delete", "/data/products?columns=name&name=eq.x", ""),
    ("patch", "/data/products?on_conflict=id&name=eq.x", ""),
    ("post", "/data/products?on_conflict=id", ""),                   # on_conflict without a resolution
    ("post", "/data/products", "resolution=overwrite"),
    ("post", "/data/products?limit=1", ""),
    ("post", "/data/products?on_conflict=price", "resolution=merge-duplicates"),  # no unique index: 42P10
])
def test_write_parameters_out_of_place_are_400(client, tokens, method, url, prefer) -> None:
    headers = auth(tokens["alice"], **({"Prefer": prefer} if prefer else {}))
    response = getattr(client, method)(url, json={"name": "out-of-place", "price": 1}, headers=headers)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert set(response.get_json()) == {"code", "message", "details", "hint"}
    assert client.get("/data/products?name=eq.out-of-place", headers=auth(tokens["alice"])).get_json() == []
