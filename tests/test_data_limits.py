"""The data API's limits hold against hostile input, on the live gateway
(issue 11): a refused request gets a 4xx in PostgREST's error shape, never a
500, and writes nothing."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from gateway.settings import Settings
from tests.conftest import auth

ERROR_KEYS = {"code", "message", "details", "hint"}


class Api:
    """requests against /data as one user."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base + "/data"
        self.token = token

    def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = auth(self.token, **kwargs.pop("headers", {}))
        return requests.request(method, self.base + path, headers=headers, timeout=30, **kwargs)


@pytest.fixture()
def alice(gateway_url, tokens) -> Api:
    return Api(gateway_url, tokens["alice"])


@pytest.fixture()
def prefix() -> str:
    return f"limits-{uuid.uuid4().hex[:8]}"


def make_products(api: Api, prefix: str, prices: list[int]) -> list[dict]:
    rows = [{"name": f"{prefix}-{i}", "price": price} for i, price in enumerate(prices)]
    response = api("POST", "/products", json=rows, headers={"Prefer": "return=representation"})
    assert response.status_code == 201, response.text
    return response.json()


def prices_of(api: Api, prefix: str) -> dict[str, float]:
    response = api("GET", f"/products?name=like.{prefix}-*&select=name,price")
    assert response.status_code == 200, response.text
    return {row["name"]: row["price"] for row in response.json()}


def refused(response: requests.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == ERROR_KEYS, body
    if code is not None:
        assert body["code"] == code, body
    return body


def test_singular_write_matching_two_rows_is_406_and_writes_nothing(alice, prefix) -> None:
    make_products(alice, prefix, [1, 2])
    single = {"Accept": "application/vnd.pgrst.object+json", "Prefer": "return=representation"}
    refused(alice("PATCH", f"/products?name=like.{prefix}-*", json={"price": 50}, headers=single), 406, "PGRST116")
    refused(alice("DELETE", f"/products?name=like.{prefix}-*", headers=single), 406, "PGRST116")
    refused(alice("DELETE", f"/products?name=like.{prefix}-*",
                  headers={"Accept": "application/vnd.pgrst.object+json"}), 406, "PGRST116")
    assert prices_of(alice, prefix) == {f"{prefix}-0": 1, f"{prefix}-1": 2}
    one = alice("PATCH", f"/products?name=eq.{prefix}-0", json={"price": 3}, headers=single)
    assert one.status_code == 200 and one.json()["price"] == 3   # an object, not an array


def test_limit_with_order_bounds_delete_and_patch(alice, prefix) -> None:
    make_products(alice, prefix, [30, 10, 20])
    deleted = alice("DELETE", f"/products?name=like.{prefix}-*&limit=1&order=price.asc")
    assert deleted.status_code == 204 and deleted.headers["Content-Range"] == "*/1"
    assert prices_of(alice, prefix) == {f"{prefix}-0": 30, f"{prefix}-2": 20}
    patched = alice("PATCH", f"/products?name=like.{prefix}-*&limit=1&order=price.desc", json={"price": 31},
                    headers={"Prefer": "return=representation"})
    assert [row["name"] for row in patched.json()] == [f"{prefix}-0"]
    assert prices_of(alice, prefix) == {f"{prefix}-0": 31, f"{prefix}-2": 20}


@pytest.mark.parametrize("query", ["limit=1", "offset=1", "limit=1&offset=0"])
def test_limit_or_offset_without_order_on_writes_is_refused(alice, prefix, query) -> None:
    make_products(alice, prefix, [1, 2, 3])
    refused(alice("DELETE", f"/products?name=like.{prefix}-*&{query}"), 400, "PGRST109")
    refused(alice("PATCH", f"/products?name=like.{prefix}-*&{query}", json={"price": 9}), 400, "PGRST109")
    assert sorted(prices_of(alice, prefix).values()) == [1, 2, 3]


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(alice, prefix, number) -> None:
    body = f'[{{"name": "{prefix}-ok", "price": 1}}, {{"name": "{prefix}-bad", "price": {number}}}]'
    refused(alice("POST", "/products", data=body, headers={"Content-Type": "application/json"}), 400)
    assert prices_of(alice, prefix) == {}
    make_products(alice, prefix, [5])
    refused(alice("PATCH", f"/products?name=eq.{prefix}-0", data=f'{{"price": {number}}}',
                  headers={"Content-Type": "application/json"}), 400)
    assert prices_of(alice, prefix) == {f"{prefix}-0": 5}


@pytest.mark.parametrize("select", ["name,name", "*,name", "*,*", "a:name,a:price",
                                    ",".join(f"c{i}:name" for i in range(Settings.data_max_select_items + 1))])
def test_select_lists_refuse_duplicates_and_length(alice, select) -> None:
    refused(alice("GET", "/products", params={"select": select, "limit": "1"}), 400, "PGRST100")


def test_select_list_at_the_cap_is_served(alice) -> None:
    select = ",".join(f"c{i}:name" for i in range(Settings.data_max_select_items))
    response = alice("GET", "/products", params={"select": select, "limit": "1"})
    assert response.status_code == 200 and len(response.json()[0]) == Settings.data_max_select_items


@pytest.fixture()
def small_response_client(app_config) -> Iterator[Any]:
    """An in-process gateway on the session's database with a 2 kB cap."""
    from gateway.app import create_app

    yield create_app({**app_config, "data_max_response_bytes": 2000}).test_client()


def test_response_size_cap_is_a_clear_error(small_response_client, tokens, prefix) -> None:
    client, headers = small_response_client, auth(tokens["alice"])
    rows = [{"name": f"{prefix}-{i:02d}-" + "x" * 150, "price": 1} for i in range(20)]
    too_big = client.post("/data/products", json=rows, headers={**headers, "Prefer": "return=representation"})
    assert too_big.status_code == 400 and too_big.get_json()["code"] == "response_too_large"
    assert client.get(f"/data/products?name=like.{prefix}-*", headers=headers).get_json() == []  # rolled back
    assert client.post("/data/products", json=rows, headers=headers).status_code == 201  # return=minimal
    capped = client.get(f"/data/products?name=like.{prefix}-*", headers=headers)
    body = capped.get_json()
    assert capped.status_code == 400 and set(body) == ERROR_KEYS and body["code"] == "response_too_large"
    assert "2000" in body["details"] and body["hint"]
    assert client.get(f"/data/products?name=like.{prefix}-*&limit=2", headers=headers).status_code == 200


@pytest.mark.parametrize("table,row", [
    ("products", {"name": "n" * 201, "price": 1}),
    ("projects", {"name": "p", "owner_email": "e" * 10_000 + "@example.com"}),
    ("projects", {"name": "p", "workflow_id": "w" * 201}),
])
def test_free_text_columns_have_length_limits(alice, table, row) -> None:
    body = refused(alice("POST", f"/{table}", json=row), 400, "23514")
    assert body["hint"]


def nested(depth: int) -> str:
    return "(" + "or(" * (depth - 1) + "name.eq.x" + ")" * (depth - 1) + ")"


@pytest.mark.parametrize("key", ["or", "and", "not.or"])
def test_deeply_nested_logic_trees_are_400(alice, key) -> None:
    refused(alice("GET", "/products", params={key: nested(330)}), 400, "PGRST100")
    refused(alice("GET", "/products", params={key: nested(Settings.data_max_logic_depth + 1)}), 400, "PGRST100")
    assert alice("GET", "/products", params={key: nested(Settings.data_max_logic_depth)}).status_code == 200
    refused(alice("DELETE", "/products", params={key: nested(330)}), 400, "PGRST100")


@pytest.mark.parametrize("params", [
    {"name": "eq.a\x00b"},
    {"or": "(name.eq.a\x00b,price.gt.1)"},
    {"name": "in.(a,\"b\x00\")"},
    {"select": "name\x00"},
    {"order": "name\x00"},
    {"na\x00me": "eq.x"},
    {"limit": "\u00b2"},
    {"offset": "\u00b2"},
    {"limit": "\u0663"},      # ARABIC-INDIC DIGIT THREE: int() accepts it, the grammar must not
    {"offset": "1\u00b9"},
    {"limit": "9" * 40},
])
def test_nul_bytes_and_non_ascii_digits_in_the_query_are_400(alice, params) -> None:
    refused(alice("GET", "/products", params=params), 400)


def test_nul_bytes_in_values_are_400_and_write_nothing(alice, prefix) -> None:
    refused(alice("POST", "/products", json={"name": f"{prefix}-a\x00b", "price": 1}), 400)
    refused(alice("POST", "/products", json=[{"name": f"{prefix}-ok", "price": 1},
                                             {"name": f"{prefix}-\x00", "price": 1}]), 400)
    assert prices_of(alice, prefix) == {}
    make_products(alice, prefix, [1])
    refused(alice("PATCH", f"/products?name=eq.{prefix}-0", json={"name": "\x00"}), 400)
    refused(alice("DELETE", "/products", params={"name": f"eq.{prefix}-0\x00"}), 400)
    assert prices_of(alice, prefix) == {f"{prefix}-0": 1}
