"""Server-side prepared statements (gateway/prepared.py through
tenant_transaction): statements are prepared once per connection by shape,
answer exactly as the simple query did, row-level security still decides
what each caller sees, and claims never outlive their transaction."""
from __future__ import annotations

import uuid
from decimal import Decimal

import psycopg2
import psycopg2.errors
import pytest
from psycopg2.extras import Json

from gateway.app import create_app
from gateway.db import tenant_transaction
from gateway.prepared import parameter_type, positional_sql
from tests.conftest import TENANT_1, TENANT_2, auth

ALICE = {"sub": "alice", "tenant_id": TENANT_1, "role": "admin"}
CHARLIE = {"sub": "charlie", "tenant_id": TENANT_2, "role": "admin"}
TENANTS_OF_PRODUCTS = "SELECT DISTINCT tenant_id::text FROM products WHERE price >= %s"


@pytest.fixture(scope="module")
def one_connection_app(app_config):
    """An app whose pool has one connection, so every transaction below
    runs on the same server session (where prepared statements live).
    Budgets off: a pool of one cannot leave a connection to other tenants,
    so the budgets refuse it (gateway/budgets.py, db_connections)."""
    return create_app({**app_config, "db_pool_size": 1, "budgets_enabled": False})


def prepared_on_the_connection(app) -> dict[str, str]:
    pool = app.extensions["apprun.db"]
    with pool.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT name, statement FROM pg_prepared_statements")
        return dict(cur.fetchall())


def test_placeholders_become_positional() -> None:
    assert positional_sql("SELECT %s, '100%%' WHERE a = %s", 2) == "SELECT $1, '100%' WHERE a = $2"
    assert positional_sql("SELECT %(name)s", 1) is None
    assert positional_sql("SELECT $$%s$$", 1) is None
    assert positional_sql("SELECT %s", 2) is None


def test_parameter_types_mirror_psycopg2_literals() -> None:
    assert [parameter_type(v) for v in ("x", None, Json({}), True, 5, 2 ** 40, 2 ** 70, Decimal("1.5"), 1.5)] == \
        ["unknown", "unknown", "unknown", "boolean", "integer", "bigint", "numeric", "numeric", "numeric"]
    assert parameter_type(float("nan")) is None
    assert parameter_type([1, 2]) is None


def test_a_shape_is_prepared_once_and_reused(one_connection_app) -> None:
    sql = "SELECT count(*) FROM products WHERE price >= %s AND name <> %s"
    with one_connection_app.app_context():
        for _ in range(3):
            with tenant_transaction(ALICE, single_statement=True) as cur:
                cur.execute(sql, (0, "nothing"))
                assert cur.fetchone()[0] >= 1
        statements = prepared_on_the_connection(one_connection_app)
    matching = [text for text in statements.values() if "price >= $1 AND name <> $2" in text]
    assert len(matching) == 1


@pytest.mark.parametrize("single_statement", [True, False])
def test_row_level_security_decides_for_each_caller_on_one_connection(one_connection_app,
                                                                      single_statement: bool) -> None:
    with one_connection_app.app_context():
        seen = []
        for claims in (ALICE, CHARLIE, ALICE, CHARLIE):
            with tenant_transaction(claims, single_statement=single_statement) as cur:
                cur.execute(TENANTS_OF_PRODUCTS, (0,))
                seen.append([row[0] for row in cur.fetchall()])
        assert any(TENANTS_OF_PRODUCTS.replace("%s", "$1") in text
                   for text in prepared_on_the_connection(one_connection_app).values())
    assert seen == [[TENANT_1], [TENANT_2], [TENANT_1], [TENANT_2]]


def test_claims_do_not_outlive_a_prepared_statement(one_connection_app) -> None:
    with one_connection_app.app_context():
        with tenant_transaction(CHARLIE, single_statement=True) as cur:
            cur.execute(TENANTS_OF_PRODUCTS, (0,))
        with pytest.raises(psycopg2.errors.InvalidTextRepresentation):
            with tenant_transaction(CHARLIE, single_statement=True) as cur:
                cur.execute(TENANTS_OF_PRODUCTS, ("not a number",))
        pool = one_connection_app.extensions["apprun.db"]
        with pool.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT coalesce(current_setting('request.jwt.claims', true), '')")
            assert cur.fetchone()[0] == ""
            # Without claims RLS shows nothing, through the same prepared shape.
            cur.execute("SELECT name FROM pg_prepared_statements WHERE statement LIKE '%price >= $1'")
            (name,) = cur.fetchone()
            cur.execute(f"EXECUTE {name}(0)")
            assert cur.fetchall() == []


@pytest.mark.parametrize("value", ["text", 5, 2 ** 40, True, None, Decimal("2.50"), 1.25])
def test_results_keep_the_types_of_the_simple_query(one_connection_app, app_config, value) -> None:
    sql = "SELECT %s, pg_typeof(%s)::text"
    with one_connection_app.app_context():
        for _ in range(2):  # the second run executes the prepared statement
            with tenant_transaction(ALICE, single_statement=True) as cur:
                cur.execute(sql, (value, value))
                prepared_result = cur.fetchone()
    unprepared_app = create_app({**app_config, "db_prepared_statements": 0})
    with unprepared_app.app_context():
        with tenant_transaction(ALICE, single_statement=True) as cur:
            cur.execute(sql, (value, value))
            assert cur.fetchone() == prepared_result


def test_json_parameters_and_literal_percent(one_connection_app) -> None:
    with one_connection_app.app_context():
        for _ in range(2):
            with tenant_transaction(ALICE, single_statement=True) as cur:
                cur.execute("SELECT %s::jsonb ->> 'a', 'x' LIKE '%%'", (Json({"a": "b"}),))
                assert cur.fetchone() == ("b", True)


def test_unpreparable_statement_runs_as_before(one_connection_app) -> None:
    # "$1 IS NULL" has no type to infer: PREPARE fails, the statement still runs.
    with one_connection_app.app_context():
        for _ in range(2):
            with tenant_transaction(ALICE, single_statement=True) as cur:
                cur.execute("SELECT %s IS NULL", (None,))
                assert cur.fetchone() == (True,)


def test_failed_prepared_write_writes_nothing(one_connection_app) -> None:
    name = f"prep-{uuid.uuid4().hex[:8]}"
    sql = "INSERT INTO products (name, price) VALUES (%s, %s)"
    with one_connection_app.app_context():
        with tenant_transaction(ALICE, single_statement=True) as cur:
            cur.execute(sql, (name, 1))
        with pytest.raises(psycopg2.errors.CheckViolation):
            with tenant_transaction(ALICE, single_statement=True) as cur:
                cur.execute(sql, (name + "-bad", -1))
        with tenant_transaction(ALICE, single_statement=True) as cur:
            cur.execute("SELECT count(*) FROM products WHERE name LIKE %s", (name + "%",))
            assert cur.fetchone()[0] == 1


def test_least_recently_used_shapes_are_deallocated(app_config) -> None:
    small = create_app({**app_config, "db_pool_size": 1, "budgets_enabled": False, "db_prepared_statements": 2})
    with small.app_context():
        for n in range(4):
            with tenant_transaction(ALICE, single_statement=True) as cur:
                cur.execute(f"SELECT {n} + %s", (1,))
                assert cur.fetchone()[0] == n + 1
        statements = prepared_on_the_connection(small)
    assert sorted(text.rsplit(" AS ", 1)[1] for text in statements.values()) == ["SELECT 2 + $1", "SELECT 3 + $1"]


def test_zero_turns_preparation_off(app_config) -> None:
    off = create_app({**app_config, "db_pool_size": 1, "budgets_enabled": False, "db_prepared_statements": 0})
    with off.app_context():
        for _ in range(2):
            with tenant_transaction(ALICE, single_statement=True) as cur:
                cur.execute("SELECT 1 + %s", (1,))
        assert prepared_on_the_connection(off) == {}


# -- read plans (gateway/data/plans.py): one parse per request text -------------

def test_a_cached_read_plan_still_lets_row_level_security_decide(one_connection_app, tokens) -> None:
    """The same request text, alternately from two tenants on one pooled
    connection: one plan, and each caller sees only its own rows."""
    client = one_connection_app.test_client()
    url = "/data/products?select=tenant_id&price=gte.0&order=name.asc&limit=50"
    plans = one_connection_app.extensions["apprun.read_plans"]
    seen = []
    for name in ("alice", "charlie", "alice", "charlie"):
        response = client.get(url, headers=auth(tokens[name]))
        assert response.status_code == 200, response.get_data(as_text=True)
        seen.append({row["tenant_id"] for row in response.get_json()})
    assert seen == [{TENANT_1}, {TENANT_2}, {TENANT_1}, {TENANT_2}]
    assert sum(1 for key in plans._plans if key[1] == url.split("?", 1)[1]) == 1


def test_read_plans_are_keyed_by_the_whole_request_text(one_connection_app, tokens) -> None:
    """Prefer, Accept and Range change the answer, so they are part of the
    key; a refused request leaves no plan and is refused again."""
    client = one_connection_app.test_client()
    url = "/data/products?select=id&order=name.asc"
    plain = client.get(url, headers=auth(tokens["alice"]))
    counted = client.get(url, headers=auth(tokens["alice"], Prefer="count=exact"))
    ranged = client.get(url, headers=auth(tokens["alice"], Range="0-0"))
    as_csv = client.get(url, headers=auth(tokens["alice"], Accept="text/csv"))
    assert plain.headers["Content-Range"].endswith("/*") and "Preference-Applied" not in plain.headers
    assert counted.headers["Preference-Applied"] == "count=exact"
    assert not counted.headers["Content-Range"].endswith("/*")
    assert len(ranged.get_json()) == 1 and len(plain.get_json()) > 1
    assert as_csv.get_data(as_text=True).startswith("id\n")
    plans = one_connection_app.extensions["apprun.read_plans"]
    before = len(plans)
    for _ in range(2):
        refused = client.get("/data/products?limit=-1", headers=auth(tokens["alice"]))
        assert refused.status_code == 400 and refused.get_json()["code"] == "PGRST100"
    assert len(plans) == before


def test_the_plan_cache_is_bounded() -> None:
    from gateway.data.plans import PlanCache

    cache = PlanCache(size=3)
    for n in range(10):
        cache.put(("t", str(n), None, None, None), object())  # type: ignore[arg-type]
        assert len(cache) <= 3
    assert cache.get(("t", "9", None, None, None)) is not None
