"""Upload limits: object size (global and per bucket), allowed MIME types
per bucket, and the tenant's quota by plan.

Both quota breaches answer **413** (``quota_bytes_exceeded`` /
``quota_objects_exceeded``): the request is too large for what the tenant
has left, and waiting does not help (which 429 would suggest)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gateway.storage.errors import StorageError

MIME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/(\*|[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*)$")
SIZE_RE = re.compile(r"^\s*(\d+)\s*(B|KB|MB|GB)?\s*$", re.IGNORECASE)
SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3}


@dataclass(frozen=True)
class Quota:
    max_bytes: int
    max_objects: int


def quota_for(settings: Any, plan: str) -> Quota:
    if plan == "pro":
        return Quota(settings.storage_pro_quota_bytes, settings.storage_pro_quota_objects)
    return Quota(settings.storage_free_quota_bytes, settings.storage_free_quota_objects)


def check_quota(quota: Quota, plan: str, used_bytes: int, used_objects: int) -> None:
    """After the write (inside its transaction): over the quota rolls it back."""
    if used_bytes > quota.max_bytes:
        raise StorageError(413, "quota_bytes_exceeded",
                           f"the tenant's storage quota ({quota.max_bytes} bytes, plan '{plan}') is used up",
                           details={"used_bytes": used_bytes, "max_bytes": quota.max_bytes})
    if used_objects > quota.max_objects:
        raise StorageError(413, "quota_objects_exceeded",
                           f"the tenant's object quota ({quota.max_objects} objects, plan '{plan}') is used up",
                           details={"used_objects": used_objects, "max_objects": quota.max_objects})


def parse_size_limit(value: Any) -> int | None:
    """``file_size_limit`` as a number of bytes or Supabase's "10MB" form."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise StorageError(400, "invalid_bucket_options", "'file_size_limit' must be a size")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := SIZE_RE.match(value)):
        size = int(match.group(1)) * SIZE_UNITS[(match.group(2) or "B").upper()]
    else:
        raise StorageError(400, "invalid_bucket_options", "'file_size_limit' must be bytes or e.g. \"10MB\"")
    if size <= 0:
        raise StorageError(400, "invalid_bucket_options", "'file_size_limit' must be positive")
    return size


def parse_mime_types(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) and MIME_RE.match(item) for item in value):
        raise StorageError(400, "invalid_bucket_options",
                           "'allowed_mime_types' must be a list like [\"image/png\", \"text/*\"]")
    return [item.lower() for item in value] or None


def base_mimetype(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def check_mimetype(content_type: str, allowed: list[str] | None) -> None:
    if not allowed:
        return
    mimetype = base_mimetype(content_type)
    major = mimetype.split("/", 1)[0]
    if mimetype in allowed or f"{major}/*" in allowed:
        return
    raise StorageError(415, "invalid_mime_type", f"mime type {mimetype} is not supported by this bucket",
                       details={"allowed_mime_types": allowed})
