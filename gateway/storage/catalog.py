"""The metadata SQL.  Every function runs on a cursor from
``tenant_transaction``: PostgreSQL's row-level security limits each
statement to the caller's tenant, so no query names a tenant itself."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg2.errors

from gateway.db import ClaimsCursor
from gateway.storage.errors import StorageError, bucket_not_found

BUCKET_COLUMNS = "id, name, owner, public, file_size_limit, allowed_mime_types, created_at, updated_at"
OBJECT_COLUMNS = ("id, bucket_id, name, storage_key, size, mimetype, cache_control, etag, user_metadata, owner, "
                  "created_at, updated_at, last_accessed_at")
SORT_COLUMNS = ("name", "created_at", "updated_at", "last_accessed_at")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def bucket_json(row: tuple) -> dict[str, Any]:
    bucket_id, name, owner, public, size_limit, mime_types, created_at, updated_at = row
    return {"id": bucket_id, "name": name, "owner": owner, "public": public, "file_size_limit": size_limit,
            "allowed_mime_types": mime_types, "created_at": _iso(created_at), "updated_at": _iso(updated_at)}


@dataclass(frozen=True)
class StoredObject:
    id: str
    bucket_id: str
    name: str
    storage_key: str
    size: int
    mimetype: str
    cache_control: str | None
    etag: str
    user_metadata: dict[str, Any] | None
    owner: str
    created_at: datetime
    updated_at: datetime
    last_accessed_at: datetime

    @classmethod
    def from_row(cls, row: tuple) -> StoredObject:
        return cls(str(row[0]), *row[1:])

    def info_json(self) -> dict[str, Any]:
        """GET /object/info: Supabase's field names."""
        return {"id": self.id, "version": self.storage_key.rsplit("/", 1)[-1], "name": self.name,
                "bucket_id": self.bucket_id, "size": self.size, "content_type": self.mimetype,
                "cache_control": self.cache_control, "etag": self.etag, "metadata": self.user_metadata,
                "last_modified": _iso(self.updated_at), "created_at": _iso(self.created_at)}

    def file_metadata(self) -> dict[str, Any]:
        return {"eTag": self.etag, "size": self.size, "mimetype": self.mimetype,
                "cacheControl": self.cache_control, "lastModified": _iso(self.updated_at),
                "contentLength": self.size, "httpStatusCode": 200}

    def removed_json(self) -> dict[str, Any]:
        return {"id": self.id, "bucket_id": self.bucket_id, "name": self.name, "owner": self.owner,
                "created_at": _iso(self.created_at), "updated_at": _iso(self.updated_at),
                "last_accessed_at": _iso(self.last_accessed_at), "metadata": self.file_metadata()}


# -- buckets ------------------------------------------------------------------
def list_buckets(cur: ClaimsCursor) -> list[dict[str, Any]]:
    cur.execute(f"SELECT {BUCKET_COLUMNS} FROM storage_buckets ORDER BY id")
    return [bucket_json(row) for row in cur.fetchall()]


def get_bucket(cur: ClaimsCursor, bucket_id: str) -> dict[str, Any]:
    cur.execute(f"SELECT {BUCKET_COLUMNS} FROM storage_buckets WHERE id = %s", (bucket_id,))
    row = cur.fetchone()
    if row is None:
        raise bucket_not_found(bucket_id)
    return bucket_json(row)


def create_bucket(cur: ClaimsCursor, bucket_id: str, name: str, owner: str, options: dict[str, Any]) -> bool:
    cur.execute(
        """INSERT INTO storage_buckets (id, name, owner, public, file_size_limit, allowed_mime_types)
           VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (tenant_id, id) DO NOTHING RETURNING id""",
        (bucket_id, name, owner, options.get("public", False), options.get("file_size_limit"),
         options.get("allowed_mime_types")),
    )
    return cur.fetchone() is not None


def update_bucket(cur: ClaimsCursor, bucket_id: str, options: dict[str, Any]) -> bool:
    assignments = ", ".join(f"{column} = %s" for column in options)
    cur.execute(f"UPDATE storage_buckets SET {assignments}{', ' if assignments else ''}updated_at = now() "
                "WHERE id = %s RETURNING id", (*options.values(), bucket_id))
    return cur.fetchone() is not None


def bucket_exists(cur: ClaimsCursor, bucket_id: str) -> bool:
    cur.execute("SELECT 1 FROM storage_buckets WHERE id = %s", (bucket_id,))
    return cur.fetchone() is not None


def delete_bucket(cur: ClaimsCursor, bucket_id: str) -> bool:
    try:
        cur.execute("DELETE FROM storage_buckets WHERE id = %s RETURNING id", (bucket_id,))
    except psycopg2.errors.ForeignKeyViolation:
        raise StorageError(409, "bucket_not_empty", "The bucket you tried to delete is not empty",
                           hint="empty it first (POST /bucket/<id>/empty)") from None
    return cur.fetchone() is not None


# -- objects ------------------------------------------------------------------
@dataclass(frozen=True)
class UploadTarget:
    """What an upload must respect, read before any byte is stored."""
    file_size_limit: int | None
    allowed_mime_types: list[str] | None
    used_bytes: int
    used_objects: int
    plan: str
    existing_size: int | None   # the object being replaced, if any


def upload_target(cur: ClaimsCursor, bucket_id: str, name: str) -> UploadTarget:
    cur.execute(
        """SELECT b.file_size_limit, b.allowed_mime_types,
                  coalesce((SELECT bytes FROM storage_usage), 0), coalesce((SELECT objects FROM storage_usage), 0),
                  coalesce((SELECT plan FROM tenants), 'free'),
                  (SELECT size FROM storage_objects o WHERE o.bucket_id = b.id AND o.name = %s)
           FROM storage_buckets b WHERE b.id = %s""",
        (name, bucket_id),
    )
    row = cur.fetchone()
    if row is None:
        raise bucket_not_found(bucket_id)
    return UploadTarget(*row)


def get_object(cur: ClaimsCursor, bucket_id: str, name: str) -> StoredObject | None:
    cur.execute(f"SELECT {OBJECT_COLUMNS} FROM storage_objects WHERE bucket_id = %s AND name = %s", (bucket_id, name))
    row = cur.fetchone()
    return StoredObject.from_row(row) if row else None


def insert_object(cur: ClaimsCursor, values: dict[str, Any], upsert: bool) -> tuple[str | None, str | None]:
    """Insert (or with ``upsert`` replace) an object row.  Returns (id, the
    replaced storage key); id None means the name is taken and upsert is off."""
    columns = ("bucket_id", "name", "storage_key", "size", "mimetype", "cache_control", "etag", "user_metadata",
               "owner")
    params = tuple(json.dumps(values[c]) if c == "user_metadata" and values[c] is not None else values[c]
                   for c in columns)
    placeholders = ", ".join(["%s"] * len(columns))
    try:
        if not upsert:
            cur.execute(f"INSERT INTO storage_objects ({', '.join(columns)}) VALUES ({placeholders}) "
                        "ON CONFLICT (tenant_id, bucket_id, name) DO NOTHING RETURNING id", params)
            row = cur.fetchone()
            return (str(row[0]) if row else None), None
        # Lock and read the row being replaced first: a CTE of the upsert
        # itself would miss it (a row the same command updates is skipped).
        cur.execute("SELECT storage_key FROM storage_objects WHERE bucket_id = %s AND name = %s FOR UPDATE",
                    (values["bucket_id"], values["name"]))
        old = cur.fetchone()
        cur.execute(
            f"""INSERT INTO storage_objects ({', '.join(columns)}) VALUES ({placeholders})
                ON CONFLICT (tenant_id, bucket_id, name) DO UPDATE
                  SET storage_key = EXCLUDED.storage_key, size = EXCLUDED.size, mimetype = EXCLUDED.mimetype,
                      cache_control = EXCLUDED.cache_control, etag = EXCLUDED.etag,
                      user_metadata = EXCLUDED.user_metadata, owner = EXCLUDED.owner, updated_at = now()
                RETURNING id""",
            params,
        )
        row = cur.fetchone()
        return str(row[0]), (old[0] if old else None)
    except psycopg2.errors.ForeignKeyViolation:
        raise bucket_not_found(values["bucket_id"]) from None


def usage(cur: ClaimsCursor) -> tuple[int, int, str]:
    cur.execute("SELECT coalesce((SELECT bytes FROM storage_usage), 0), "
                "coalesce((SELECT objects FROM storage_usage), 0),"
                " coalesce((SELECT plan FROM tenants), 'free')")
    used_bytes, used_objects, plan = cur.fetchone()
    return int(used_bytes), int(used_objects), plan


def move_object(cur: ClaimsCursor, bucket_id: str, source: str, destination_bucket: str, destination: str) -> bool:
    try:
        cur.execute("UPDATE storage_objects SET bucket_id = %s, name = %s, updated_at = now() "
                    "WHERE bucket_id = %s AND name = %s RETURNING id", (destination_bucket, destination, bucket_id,
                                                                        source))
    except psycopg2.errors.UniqueViolation:
        raise StorageError(409, "Duplicate", "The resource already exists",
                           details=f"'{destination}' exists in '{destination_bucket}'") from None
    except psycopg2.errors.ForeignKeyViolation:
        raise bucket_not_found(destination_bucket) from None
    return cur.fetchone() is not None


def delete_objects(cur: ClaimsCursor, bucket_id: str, names: list[str] | None) -> list[StoredObject]:
    """Delete the named objects (``None``: all of the bucket's)."""
    if names is None:
        cur.execute(f"DELETE FROM storage_objects WHERE bucket_id = %s RETURNING {OBJECT_COLUMNS}", (bucket_id,))
    else:
        cur.execute(f"DELETE FROM storage_objects WHERE bucket_id = %s AND name = ANY(%s) RETURNING {OBJECT_COLUMNS}",
                    (bucket_id, names))
    return [StoredObject.from_row(row) for row in cur.fetchall()]


def existing_names(cur: ClaimsCursor, bucket_id: str, names: list[str]) -> set[str]:
    cur.execute("SELECT name FROM storage_objects WHERE bucket_id = %s AND name = ANY(%s)", (bucket_id, names))
    return {row[0] for row in cur.fetchall()}


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_folder(cur: ClaimsCursor, bucket_id: str, prefix: str, search: str, sort_column: str, descending: bool,
                limit: int, offset: int) -> list[dict[str, Any]]:
    """One folder level, as Supabase lists it: the files directly under
    ``prefix`` and one entry (id null) per sub-folder.  ``search`` keeps the
    entries whose name starts with it (case-insensitive)."""
    assert sort_column in SORT_COLUMNS
    direction = "DESC" if descending else "ASC"
    # Positional parameters: ClaimsCursor prepends the claims to the first statement.
    start, like, search_like = len(prefix) + 1, _like_escape(prefix) + "%", _like_escape(search) + "%"
    cur.execute(
        f"""WITH entries AS (
              SELECT split_part(substr(name, %s), '/', 1) AS entry,
                     strpos(substr(name, %s), '/') > 0 AS is_folder,
                     id, created_at, updated_at, last_accessed_at, size, mimetype, cache_control, etag
              FROM storage_objects
              WHERE bucket_id = %s AND name LIKE %s
            ), listing AS (
              SELECT DISTINCT entry AS name, NULL::uuid AS id, NULL::timestamptz AS created_at,
                     NULL::timestamptz AS updated_at, NULL::timestamptz AS last_accessed_at, NULL::bigint AS size,
                     NULL AS mimetype, NULL AS cache_control, NULL AS etag
              FROM entries WHERE is_folder
              UNION ALL
              SELECT entry, id, created_at, updated_at, last_accessed_at, size, mimetype, cache_control, etag
              FROM entries WHERE NOT is_folder
            )
            SELECT * FROM listing WHERE %s = '' OR name ILIKE %s
            ORDER BY {sort_column} {direction}, name {direction}
            LIMIT %s OFFSET %s""",
        (start, start, bucket_id, like, search, search_like, limit, offset),
    )
    listing = []
    for name, object_id, created_at, updated_at, accessed_at, size, mimetype, cache_control, etag in cur.fetchall():
        metadata = None
        if object_id is not None:
            metadata = {"eTag": etag, "size": size, "mimetype": mimetype, "cacheControl": cache_control,
                        "lastModified": _iso(updated_at), "contentLength": size, "httpStatusCode": 200}
        listing.append({"name": name, "id": str(object_id) if object_id else None, "updated_at": _iso(updated_at),
                        "created_at": _iso(created_at), "last_accessed_at": _iso(accessed_at),
                        "metadata": metadata})
    return listing
