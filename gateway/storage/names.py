"""Rules for bucket ids and object names (the path inside a bucket).

Bytes are stored under opaque keys, never under these names, so a name can
not reach the file system; the rules keep names unambiguous and portable.
"""
from __future__ import annotations

import re

from gateway.storage.errors import StorageError

BUCKET_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# Route words that follow /object/ (and a bucket named like one of them would
# make a URL ambiguous).
RESERVED_BUCKET_IDS = frozenset({"authenticated", "copy", "info", "list", "list-v2", "move", "public", "sign",
                                 "upload", "render"})
CONTROL_CHARS_RE = re.compile(r"[\x00-\x1f\x7f]")


def check_bucket_id(bucket_id: object) -> str:
    if not isinstance(bucket_id, str) or not BUCKET_ID_RE.match(bucket_id):
        raise StorageError(400, "invalid_bucket_name",
                           "bucket ids are 1-63 characters of letters, digits, '.', '_' and '-'")
    if bucket_id.lower() in RESERVED_BUCKET_IDS:
        raise StorageError(400, "invalid_bucket_name", f"'{bucket_id}' is reserved by the storage API")
    return bucket_id


def check_object_name(name: object, max_bytes: int) -> str:
    """A relative path of non-empty segments: no absolute paths, no '.' or
    '..' segments, no NUL or other control characters, bounded length."""
    if not isinstance(name, str) or not name:
        raise StorageError(400, "invalid_key", "the object path must be a non-empty string")
    if len(name.encode("utf-8", "surrogatepass")) > max_bytes:
        raise StorageError(400, "invalid_key", f"the object path is longer than {max_bytes} bytes")
    if CONTROL_CHARS_RE.search(name):
        raise StorageError(400, "invalid_key", "the object path contains NUL or control characters")
    if name.startswith(("/", "\\")):
        raise StorageError(400, "invalid_key", "the object path must be relative (no leading '/')")
    for segment in name.split("/"):
        if segment in ("", ".", ".."):
            raise StorageError(400, "invalid_key", "the object path has an empty, '.' or '..' segment")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise StorageError(400, "invalid_key", "the object path is not valid UTF-8") from None
    return name


def folder_prefix(prefix: object, max_bytes: int) -> str:
    """The list prefix as a folder ('' or 'a/b/')."""
    if prefix is None or prefix == "":
        return ""
    if not isinstance(prefix, str):
        raise StorageError(400, "invalid_key", "'prefix' must be a string")
    trimmed = prefix.strip("/")
    if not trimmed:
        return ""
    return check_object_name(trimmed, max_bytes) + "/"
