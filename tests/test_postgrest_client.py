"""Supabase's own PostgREST client (postgrest-py, the ``postgrest`` package)
drives ``/data`` of the live gateway unchanged: what it sends is what a
real application sends."""
from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable, Iterator

import pytest
from postgrest import APIError, SyncPostgrestClient

from tests.conftest import TENANT_1, TENANT_2

ClientFor = Callable[[str], SyncPostgrestClient]


@pytest.fixture()
def postgrest_for(gateway_url, tokens) -> Iterator[ClientFor]:
    clients: list[SyncPostgrestClient] = []

    def make(user: str) -> SyncPostgrestClient:
        client = SyncPostgrestClient(base_url=gateway_url + "/data",
                                     headers={"Authorization": f"Bearer {tokens[user]}"})
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.aclose()


@pytest.fixture()
def prefix() -> str:
    return f"pgpy-{uuid.uuid4().hex[:8]}"


@pytest.fixture()
def five(postgrest_for, prefix) -> list[dict]:
    """Five products of alice's, inserted in bulk (postgrest-py sends ?columns=)."""
    rows = [{"name": f"{prefix}-{i}", "price": price} for i, price in enumerate([5, 10, 20, 40, 80])]
    return postgrest_for("alice").table("products").insert(rows).execute().data


def test_single_and_bulk_insert(postgrest_for, prefix, five) -> None:
    alice = postgrest_for("alice")
    single = alice.table("products").insert({"name": f"{prefix}-single", "price": 1.5}).execute()
    assert len(single.data) == 1 and single.data[0]["name"] == f"{prefix}-single"
    assert single.data[0]["tenant_id"] == TENANT_1 and single.data[0]["price"] == 1.5
    assert [row["name"] for row in five] == [f"{prefix}-{i}" for i in range(5)]
    assert {row["tenant_id"] for row in five} == {TENANT_1}
    stored = alice.table("products").select("name").like("name", f"{prefix}-*").execute().data
    assert len(stored) == 6


def test_bulk_insert_takes_only_the_named_columns(gateway_url, tokens, prefix) -> None:
    # PostgREST's ?columns=: keys outside the list are ignored, listed keys
    # missing from a row are NULL (or the column default with missing=default).
    import requests

    headers = {"Authorization": f"Bearer {tokens['alice']}", "Prefer": "return=representation"}
    rows = [{"name": f"{prefix}-a", "price": 1, "created_at": "2001-01-01T00:00:00Z"},
            {"name": f"{prefix}-b", "price": 2}]
    response = requests.post(f"{gateway_url}/data/products?columns=name,price", json=rows,
                             headers=headers, timeout=10)
    assert response.status_code == 201, response.text
    assert all(not row["created_at"].startswith("2001") for row in response.json())
    missing = requests.post(f"{gateway_url}/data/products?columns=name,price",
                            json=[{"name": f"{prefix}-c"}], headers=headers, timeout=10)
    assert missing.status_code == 400 and missing.json()["code"] == "23502"  # price NULL
    defaulted = requests.post(f"{gateway_url}/data/products?columns=name,price,created_at",
                              json=[{"name": f"{prefix}-d", "price": 3}],
                              headers={**headers, "Prefer": "return=representation,missing=default"}, timeout=10)
    assert defaulted.status_code == 201 and defaulted.json()[0]["created_at"]
    unknown = requests.post(f"{gateway_url}/data/products?columns=name,nope", json=rows, headers=headers, timeout=10)
    assert unknown.status_code == 400 and unknown.json()["code"] == "42703"


def test_select_with_filters_order_limit_range_and_count(postgrest_for, prefix, five) -> None:
    products = postgrest_for("alice").table("products")
    found = (products.select("name,price", count="exact").like("name", f"{prefix}-*")
             .gte("price", 10).order("price", desc=True).limit(2).execute())
    assert [row["name"] for row in found.data] == [f"{prefix}-4", f"{prefix}-3"]
    assert found.count == 4
    page = (products.select("name", count="exact").like("name", f"{prefix}-*").order("price")
            .range(1, 2).execute())
    assert [row["name"] for row in page.data] == [f"{prefix}-1", f"{prefix}-2"] and page.count == 5
    cheap = products.select("name").like("name", f"{prefix}-*").lt("price", 10).neq("price", 6).execute()
    assert [row["name"] for row in cheap.data] == [f"{prefix}-0"]


def test_in_ilike_and_or(postgrest_for, prefix, five) -> None:
    products = postgrest_for("alice").table("products")
    chosen = products.select("name").in_("name", [f"{prefix}-1", f"{prefix}-3", "nobody"]).order("name").execute()
    assert [row["name"] for row in chosen.data] == [f"{prefix}-1", f"{prefix}-3"]
    upper = products.select("name").ilike("name", f"{prefix.upper()}-*").execute()
    assert len(upper.data) == 5
    either = (products.select("name").like("name", f"{prefix}-*").or_("price.lt.10,price.gt.50")
              .order("price").execute())
    assert [row["name"] for row in either.data] == [f"{prefix}-0", f"{prefix}-4"]


def test_single_and_maybe_single(postgrest_for, prefix, five) -> None:
    products = postgrest_for("alice").table("products")
    one = products.select("id,name").eq("id", five[2]["id"]).single().execute()
    assert one.data == {"id": five[2]["id"], "name": f"{prefix}-2"}
    assert products.select("*").eq("name", f"{prefix}-none").maybe_single().execute() is None
    maybe = products.select("name").eq("name", f"{prefix}-3").maybe_single().execute()
    assert maybe is not None and maybe.data == {"name": f"{prefix}-3"}
    with pytest.raises(APIError) as caught:
        products.select("*").like("name", f"{prefix}-*").single().execute()
    assert caught.value.code == "PGRST116"


def test_update_and_delete(postgrest_for, prefix, five) -> None:
    products = postgrest_for("alice").table("products")
    updated = products.update({"price": 11}).eq("id", five[1]["id"]).execute()
    assert [(row["id"], row["price"]) for row in updated.data] == [(five[1]["id"], 11)]
    deleted = products.delete().like("name", f"{prefix}-*").lt("price", 15).execute()
    assert sorted(row["name"] for row in deleted.data) == [f"{prefix}-0", f"{prefix}-1"]
    left = products.select("name").like("name", f"{prefix}-*").order("name").execute()
    assert [row["name"] for row in left.data] == [f"{prefix}-2", f"{prefix}-3", f"{prefix}-4"]


def test_upsert_merges_or_ignores_on_conflict(postgrest_for, prefix, five) -> None:
    products = postgrest_for("alice").table("products")
    merged = products.upsert({"id": five[0]["id"], "name": f"{prefix}-0", "price": 7},
                             on_conflict="id").execute()
    assert [(row["id"], row["price"]) for row in merged.data] == [(five[0]["id"], 7)]
    ignored = products.upsert([{"id": five[1]["id"], "name": f"{prefix}-1", "price": 99},
                               {"name": f"{prefix}-new", "price": 3}],
                              ignore_duplicates=True, on_conflict="id", default_to_null=False).execute()
    assert [row["name"] for row in ignored.data] == [f"{prefix}-new"]   # the duplicate was skipped
    bulk = products.upsert([{"id": five[2]["id"], "name": f"{prefix}-2", "price": 21},
                            {"id": str(uuid.uuid4()), "name": f"{prefix}-upserted", "price": 4}]).execute()
    assert sorted(row["price"] for row in bulk.data) == [4, 21]
    prices = {row["name"]: row["price"] for row in
              products.select("name,price").like("name", f"{prefix}-*").execute().data}
    assert prices[f"{prefix}-0"] == 7 and prices[f"{prefix}-1"] == 10 and prices[f"{prefix}-2"] == 21
    assert prices[f"{prefix}-new"] == 3 and prices[f"{prefix}-upserted"] == 4


def test_upsert_never_touches_another_tenants_row(postgrest_for, prefix, five) -> None:
    charlie = postgrest_for("charlie").table("products")
    target = five[0]
    with pytest.raises(APIError) as caught:
        charlie.upsert({"id": target["id"], "name": "hijacked", "price": 0}, on_conflict="id").execute()
    assert caught.value.code == "42501"
    ignored = charlie.upsert({"id": target["id"], "name": "hijacked", "price": 0},
                             on_conflict="id", ignore_duplicates=True).execute()
    assert ignored.data == []
    with pytest.raises(APIError):  # naming alice's tenant explicitly does not help
        charlie.upsert({"id": target["id"], "name": "hijacked", "price": 0, "tenant_id": TENANT_1}).execute()
    alice_view = postgrest_for("alice").table("products").select("*").eq("id", target["id"]).single().execute()
    assert alice_view.data["name"] == target["name"] and alice_view.data["price"] == target["price"]
    assert alice_view.data["tenant_id"] == TENANT_1
    assert charlie.select("id").eq("id", target["id"]).execute().data == []
    assert {r["tenant_id"] for r in charlie.select("tenant_id").execute().data} == {TENANT_2}


def test_csv(postgrest_for, prefix, five) -> None:
    text = (postgrest_for("alice").table("products").select("name,price").like("name", f"{prefix}-*")
            .order("price").csv().execute().data)
    assert isinstance(text, str)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["name", "price"]
    assert rows[1:] == [[f"{prefix}-{i}", f"{price}.00"] for i, price in enumerate([5, 10, 20, 40, 80])]
    empty = postgrest_for("alice").table("products").select("id,name").eq("name", "nobody").csv().execute().data
    assert empty.strip() == "id,name"


def test_full_text_search(postgrest_for, prefix) -> None:
    products = postgrest_for("alice").table("products")
    names = ["quick brown fox", "lazy brown dog", "the foxes are jumping"]
    products.insert([{"name": f"{prefix} {n}", "price": 1} for n in names]).execute()

    def matching(builder) -> list[str]:
        return sorted(row["name"].removeprefix(prefix + " ")
                      for row in builder.like("name", f"{prefix}*").execute().data)

    def select():  # a fresh builder per query
        return products.select("name")
    assert matching(select().fts("name", "brown & fox")) == ["quick brown fox"]
    assert matching(select().plfts("name", "brown dog")) == ["lazy brown dog"]
    assert matching(select().phfts("name", "brown fox")) == ["quick brown fox"]
    assert matching(select().wfts("name", "brown -dog")) == ["quick brown fox"]
    # With a language, stemming finds "foxes" and "jumping" from "fox" and "jump".
    assert matching(select().text_search("name", "fox", {"config": "english"})) == [
        "quick brown fox", "the foxes are jumping"]
    assert matching(select().text_search("name", "jump", {"type": "plain", "config": "english"})) == [
        "the foxes are jumping"]
    assert matching(select().not_.fts("name", "brown")) == ["the foxes are jumping"]
    with pytest.raises(APIError) as caught:
        select().fts("price", "1").execute()
    assert caught.value.code == "PGRST100"


def test_errors_keep_postgrest_codes(postgrest_for) -> None:
    alice = postgrest_for("alice")
    for builder, code in [(alice.table("nope").select("*"), "PGRST205"),
                          (alice.table("products").select("bogus"), "42703"),
                          (alice.table("products").select("*").eq("price", "abc"), "22P02"),
                          (alice.table("products").insert({"name": "x", "price": -1}), "23514")]:
        with pytest.raises(APIError) as caught:
            builder.execute()
        assert caught.value.code == code
