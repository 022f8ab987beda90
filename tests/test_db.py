"""tenant_transaction(): claims reach PostgreSQL, transactions are atomic and
scoped, in both the one-round-trip and the multi-statement form."""
from __future__ import annotations

import uuid

import pytest

from gateway.db import tenant_transaction
from tests.conftest import TENANT_1, TENANT_2

ALICE = {"sub": "alice", "tenant_id": TENANT_1, "role": "admin"}
CHARLIE = {"sub": "charlie", "tenant_id": TENANT_2, "role": "admin"}


@pytest.mark.parametrize("single_statement", [True, False])
def test_claims_are_visible_to_the_statement(app, single_statement: bool) -> None:
    with app.app_context():
        with tenant_transaction(ALICE, single_statement=single_statement) as cur:
            cur.execute("SELECT current_setting('request.jwt.claims', true)::json ->> 'tenant_id'")
            assert cur.fetchone()[0] == TENANT_1


def test_claims_do_not_outlive_the_transaction(app) -> None:
    with app.app_context():
        for single_statement in (True, False):
            with tenant_transaction(CHARLIE, single_statement=single_statement) as cur:
                cur.execute("SELECT 1")
        # The pool is LIFO: this is the same connection the last request used.
        pool = app.extensions["apprun.db"]
        with pool.connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT coalesce(current_setting('request.jwt.claims', true), '')")
            assert cur.fetchone()[0] == ""


def test_literal_percent_without_params(app) -> None:
    with app.app_context():
        for single_statement in (True, False):
            with tenant_transaction(ALICE, single_statement=single_statement) as cur:
                cur.execute("SELECT '100%'")
                assert cur.fetchone()[0] == "100%"


def test_single_statement_refuses_a_second_statement(app) -> None:
    with app.app_context():
        with pytest.raises(RuntimeError, match="second statement"):
            with tenant_transaction(ALICE, single_statement=True) as cur:
                cur.execute("SELECT 1")
                cur.execute("SELECT 2")


def test_multi_statement_transaction_rolls_back_on_error(app) -> None:
    name = f"tx-{uuid.uuid4().hex[:8]}"
    with app.app_context():
        with pytest.raises(ZeroDivisionError):
            with tenant_transaction(ALICE) as cur:
                cur.execute("INSERT INTO products (name, price) VALUES (%s, 1)", (name,))
                cur.execute("SELECT count(*) FROM products WHERE name = %s", (name,))
                assert cur.fetchone()[0] == 1   # visible inside the transaction...
                raise ZeroDivisionError
        with tenant_transaction(ALICE, single_statement=True) as cur:
            cur.execute("SELECT count(*) FROM products WHERE name = %s", (name,))
            assert cur.fetchone()[0] == 0        # ...and gone after the rollback


def test_multi_statement_transaction_commits(app) -> None:
    name = f"tx-{uuid.uuid4().hex[:8]}"
    with app.app_context():
        with tenant_transaction(ALICE) as cur:
            cur.execute("INSERT INTO products (name, price) VALUES (%s, 1)", (name,))
            cur.execute("UPDATE products SET price = 2 WHERE name = %s", (name,))
        with tenant_transaction(ALICE, single_statement=True) as cur:
            cur.execute("SELECT price FROM products WHERE name = %s", (name,))
            assert [row[0] for row in cur.fetchall()] == [2]
        with tenant_transaction(CHARLIE, single_statement=True) as cur:
            cur.execute("SELECT count(*) FROM products WHERE name = %s", (name,))
            assert cur.fetchone()[0] == 0        # RLS: another tenant never sees it
