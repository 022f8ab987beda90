"""Shared helpers of the storage tests (storage3 clients, unique names)."""
from __future__ import annotations

import uuid
from typing import Any

import httpx
from storage3 import SyncStorageClient
from storage3.exceptions import StorageApiError


def storage_client(base_url: str, token: str | None = None, app: Any = None) -> SyncStorageClient:
    """storage3's own client, unchanged: against a URL, or in process
    against a Flask app through httpx's WSGI transport."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http_client = None
    if app is not None:
        http_client = httpx.Client(transport=httpx.WSGITransport(app=app), base_url=base_url, headers=headers,
                                   timeout=30)
    return SyncStorageClient(f"{base_url}/storage/v1/", headers, http_client=http_client)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def api_error(call, *args: Any, **kwargs: Any) -> StorageApiError:
    """The StorageApiError storage3 raises for a refused call."""
    try:
        call(*args, **kwargs)
    except StorageApiError as exc:
        return exc
    raise AssertionError(f"{getattr(call, '__name__', call)} succeeded, expected an error")


def storage_app(app_config: dict[str, Any], storage_dir: Any, **settings: Any) -> Any:
    """An in-process gateway on the session's database with its own storage
    settings (no background sweeper: tests call sweep() themselves)."""
    from gateway.app import create_app
    from tests.conftest import NO_FUNCTION_POOLING

    return create_app({**app_config, **NO_FUNCTION_POOLING, "storage_dir": str(storage_dir),
                       "storage_sweep_interval_s": 0, **settings})


def tenant_usage(app: Any, tenant_id: str) -> tuple[int, int]:
    """(bytes, objects) the tenant stores, as the quota check reads them."""
    from gateway.db import tenant_transaction
    from gateway.storage import catalog

    with app.app_context(), tenant_transaction({"tenant_id": tenant_id, "role": "admin", "sub": ""}) as cur:
        used_bytes, used_objects, _plan = catalog.usage(cur)
    return used_bytes, used_objects
