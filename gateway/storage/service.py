"""What every storage route shares: the blueprint, the service object
(settings, byte backend, URL signer), the Casbin check and small helpers."""
from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.routing import PathConverter

from gateway.auth.identity import current_claims
from gateway.settings import Settings
from gateway.storage.backends import ObjectBackend
from gateway.storage.errors import StorageError, add_supabase_fields
from gateway.storage.names import check_object_name
from gateway.storage.signing import UrlSigner

log = logging.getLogger(__name__)
bp = Blueprint("storage", __name__, url_prefix="/storage/v1")
bp.after_request(add_supabase_fields)
F = TypeVar("F", bound=Callable[..., Any])

MAX_PATHS_PER_REQUEST = 1000
RULE_ARGUMENT_RE = re.compile(r"<[^>]+>")


@dataclass(frozen=True)
class StorageService:
    settings: Settings
    backend: ObjectBackend
    signer: UrlSigner


def storage_service() -> StorageService:
    return current_app.extensions["apprun.storage"]


def storage_authorize(fn: F) -> F:
    """A valid JWT, and Casbin's decision for (role, tenant, route, method).
    The route pattern (not the concrete path) is what Casbin sees, so the
    decision cache holds one entry per route and not one per object name."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        claims = current_claims()
        rule = RULE_ARGUMENT_RE.sub("_", request.url_rule.rule if request.url_rule else request.path)
        authorizer = current_app.extensions["apprun.rbac"]
        if not authorizer.allowed(claims["role"], claims["tenant_id"], rule, request.method):
            raise StorageError(403, "forbidden", f"role '{claims['role']}' may not {request.method} {request.path}")
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def object_name(name: Any) -> str:
    return check_object_name(name, storage_service().settings.storage_max_path_bytes)


def duplicate(what: str) -> StorageError:
    return StorageError(409, "Duplicate", "The resource already exists", details=what)


def message(text: str) -> Response:
    return jsonify(message=text)


def upsert_header() -> bool:
    return request.headers.get("x-upsert", "false").strip().lower() == "true"


def discard(keys: list[str]) -> None:
    """Best effort: bytes whose row is gone; the sweeper gets any left over."""
    try:
        failed = storage_service().backend.delete_many(keys)
    except Exception:
        log.warning("could not delete %d stored objects; the orphan sweep will", len(keys), exc_info=True)
        return
    if failed:
        log.warning("could not delete %d stored objects (first: %s); the orphan sweep will", len(failed), failed[0])


def backend_failure(exc: Exception) -> StorageError:
    """Called in an except block: logs the traceback, answers 503."""
    log.error("storage backend error: %s", exc, exc_info=exc)
    return StorageError(503, "storage_backend_unavailable", "the object store did not answer")




class ObjectPathConverter(PathConverter):
    """werkzeug's path converter, newlines included: a name with a control
    character or a leading "/" (%2F) must reach the name check (400
    invalid_key), not miss every route."""
    regex = "(?s:.+?)"
    part_isolating = False

