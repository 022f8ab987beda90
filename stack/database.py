"""Create the database, apply the schema, set the gateway role's password
and load the seed data (DESIGN.md's tenants, users and products)."""
from __future__ import annotations

from importlib import resources
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg2
from argon2 import PasswordHasher

GATEWAY_ROLE = "apprun_gateway"
TENANT_1 = "11111111-1111-1111-1111-111111111111"
TENANT_2 = "22222222-2222-2222-2222-222222222222"
SEED_USERS = (
    ("alice@test.com", TENANT_1, "admin"),
    ("bob@test.com", TENANT_1, "user"),
    ("charlie@test.com", TENANT_2, "admin"),
)
SEED_PRODUCTS = (
    ("aaaaaaaa-0000-4000-8000-000000000001", TENANT_1, "Product A", "99.99"),
    ("aaaaaaaa-0000-4000-8000-000000000002", TENANT_1, "Product B", "149.99"),
    ("aaaaaaaa-0000-4000-8000-000000000003", TENANT_2, "Product C", "199.99"),
)


def schema_sql() -> str:
    return resources.files("stack").joinpath("schema.sql").read_text()


def ensure_database(server_url: str, name: str) -> None:
    conn = psycopg2.connect(server_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def apply_schema(owner_url: str, gateway_password: str, seed_password: str,
                 password_time_cost: int = 2, password_memory_kib: int = 19456) -> None:
    hasher = PasswordHasher(time_cost=password_time_cost, memory_cost=password_memory_kib, parallelism=1)
    conn = psycopg2.connect(owner_url)
    try:
        with conn, conn.cursor() as cur:
            # One migration at a time, even if two `up` commands race.
            cur.execute("SELECT pg_advisory_xact_lock(424242)")
            cur.execute(schema_sql())
            cur.execute(f"ALTER ROLE {GATEWAY_ROLE} WITH LOGIN PASSWORD %s", (gateway_password,))
            for email, tenant, role in SEED_USERS:
                cur.execute("SELECT password_hash FROM users WHERE lower(email) = %s", (email,))
                row = cur.fetchone()
                if row and _hash_matches(hasher, row[0], seed_password):
                    continue
                cur.execute(
                    """INSERT INTO users (tenant_id, email, password_hash, role) VALUES (%s, %s, %s, %s)
                       ON CONFLICT (lower(email)) DO UPDATE SET password_hash = EXCLUDED.password_hash""",
                    (tenant, email, hasher.hash(seed_password), role),
                )
            for product_id, tenant, name, price in SEED_PRODUCTS:
                cur.execute(
                    "INSERT INTO products (id, tenant_id, name, price) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (id) DO NOTHING",
                    (product_id, tenant, name, price),
                )
    finally:
        conn.close()


def _hash_matches(hasher: PasswordHasher, password_hash: str, password: str) -> bool:
    try:
        return hasher.verify(password_hash, password)
    except Exception:  # noqa: BLE001 - mismatch or unreadable hash: rehash
        return False


def with_credentials(url: str, user: str, password: str, database: str | None = None) -> str:
    """The same server URL with other credentials (and database)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    path = f"/{database}" if database else parts.path
    return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))
