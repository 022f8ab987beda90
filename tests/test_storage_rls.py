"""PostgreSQL, not the gateway's code, hides other tenants' storage rows:
the tables force row-level security for the gateway role."""
from __future__ import annotations

from gateway.db import plain_cursor, tenant_transaction
from tests.conftest import TENANT_1, TENANT_2
from tests.storage_helpers import storage_app, storage_client, unique

STORAGE_TABLES = ("storage_buckets", "storage_objects", "storage_usage")


def test_storage_tables_force_row_level_security(app) -> None:
    with app.app_context(), plain_cursor() as cur:
        cur.execute("SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = ANY(%s)",
                    (list(STORAGE_TABLES),))
        flags = {name: (enabled, forced) for name, enabled, forced in cur.fetchall()}
    assert flags == {table: (True, True) for table in STORAGE_TABLES}


def test_rows_of_another_tenant_are_invisible_to_the_gateway_role(app_config, tokens, tmp_path) -> None:
    app = storage_app(app_config, tmp_path)
    alice = storage_client("http://storage.test", tokens["alice"], app=app)
    bucket_id = unique("rls")
    alice.create_bucket(bucket_id)
    try:
        alice.from_(bucket_id).upload("row.txt", b"tenant one")
        counts = {}
        with app.app_context():
            for tenant in (TENANT_1, TENANT_2):
                # Even a query that names the bucket and the tenant explicitly.
                with tenant_transaction({"tenant_id": tenant, "role": "admin", "sub": ""}) as cur:
                    cur.execute("SELECT count(*) FROM storage_objects WHERE bucket_id = %s AND tenant_id = %s",
                                (bucket_id, TENANT_1))
                    counts[tenant] = cur.fetchone()[0]
            with plain_cursor() as cur:   # no claims at all
                cur.execute("SELECT count(*) FROM storage_buckets WHERE id = %s", (bucket_id,))
                counts["no claims"] = cur.fetchone()[0]
        assert counts == {TENANT_1: 1, TENANT_2: 0, "no claims": 0}
    finally:
        alice.empty_bucket(bucket_id)
        alice.delete_bucket(bucket_id)
