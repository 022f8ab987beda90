"""Object storage in the load test: task functions for the personas.

Each function takes the Locust user (a ``personas.TenantUser``: ``client``,
``headers``, ``tenant_id``, ``other_tenant``) and sends exactly one request,
so the kpi profile's arrival rate holds.  Wiring is one line per persona
class, as Locust merges a ``tasks`` dict with the ``@task`` methods::

    class AdminUser(TenantUser):   # alice and charlie
        tasks = storage_tasks.ADMIN_TASKS
    class Bob(TenantUser):
        tasks = storage_tasks.USER_TASKS

Checks (each mismatch fails the request and increments a KPI counter):

* alice and charlie upload 1-100 kB objects to their tenant's ``loadtest``
  bucket and read each back in a later task: a missing object or other
  bytes is a ``lost_writes``;
* bob downloads the tenant's seed object and lists the seed folder (the
  other tenant's seed in the listing is an ``isolation_violations``); his
  uploads, replacements and deletions must be 403 (``rbac_violations``);
* the admins' cross-tenant download of the other tenant's seed object, in
  a bucket with the same id, must be 404 (``isolation_violations``).

Share of the mix: ADMIN_TASKS add 3 to an admin's task weight of 25-28 and
USER_TASKS add 3 to bob's 20, about 11 % of all requests at the same total
rate.  The buckets and seed objects are created before the load (once, on
the master or local runner) and removed after it.
"""
from __future__ import annotations

import hashlib
import logging
import random
import uuid
from typing import Any

from locust import events

from kpi.hooks import after_load, record_violation
from locustfiles.refusals import over_budget

BUCKET = "loadtest"
MIN_OBJECT_BYTES = 1024
MAX_OBJECT_BYTES = 100 * 1024
# Uploads wait for their read-back: an admin with this many unverified
# objects reads one back instead of uploading another.
MAX_UNVERIFIED = 5
OCTET_STREAM = {"Content-Type": "application/octet-stream"}
log = logging.getLogger("apprun.storage_tasks")


def seed_name(tenant_id: str) -> str:
    return f"seed/{tenant_id}.bin"


def seed_bytes(tenant_id: str) -> bytes:
    """Deterministic, so any process can check a download without state."""
    return hashlib.sha256(tenant_id.encode()).digest() * 256   # 8 kB


def _object_url(name: str) -> str:
    return f"/storage/v1/object/{BUCKET}/{name}"


def _unverified(user: Any) -> list[tuple[str, bytes, int]]:
    if not hasattr(user, "storage_unverified"):
        user.storage_unverified = []   # (name, md5, size) uploaded, not yet read back
    return user.storage_unverified


# -- admins (alice, charlie) -----------------------------------------------
def upload_object(user: Any) -> None:
    pending = _unverified(user)
    if len(pending) >= MAX_UNVERIFIED:
        return read_back_object(user)
    payload = random.randbytes(random.randint(MIN_OBJECT_BYTES, MAX_OBJECT_BYTES))
    name = f"lt/{uuid.uuid4().hex}.bin"
    with user.client.post(_object_url(name), data=payload, headers={**user.headers, **OCTET_STREAM},
                          name="/storage/v1/object [upload]", catch_response=True) as r:
        if r.status_code != 200:
            r.failure(f"upload: HTTP {r.status_code}")
            return
        pending.append((name, hashlib.md5(payload, usedforsecurity=False).digest(), len(payload)))


def read_back_object(user: Any) -> None:
    """An uploaded object must come back with the same bytes."""
    pending = _unverified(user)
    if not pending:
        return download_seed(user)
    name, digest, size = pending.pop(0)
    with user.client.get(_object_url(name), headers=user.headers, name="/storage/v1/object [read back]",
                         catch_response=True) as r:
        if over_budget(r, "read back"):
            pending.insert(0, (name, digest, size))      # read it back later
            return
        if r.status_code != 200 or len(r.content) != size or \
                hashlib.md5(r.content, usedforsecurity=False).digest() != digest:
            r.failure(f"read back: HTTP {r.status_code}, {len(r.content or b'')} of {size} bytes")
            record_violation("lost_writes")


def cross_tenant_download(user: Any) -> None:
    """The other tenant's seed, through a bucket id both tenants have: 404."""
    with user.client.get(_object_url(seed_name(user.other_tenant)), headers=user.headers,
                         name="/storage/v1/object [cross-tenant download]", catch_response=True) as r:
        if r.status_code == 404:
            r.success()
            return
        if over_budget(r, "cross-tenant download"):
            return
        r.failure(f"cross-tenant download answered {r.status_code}, expected 404")
        if r.status_code < 400:
            record_violation("isolation_violations")


# -- users (bob) ----------------------------------------------------------------
def download_seed(user: Any) -> None:
    with user.client.get(_object_url(seed_name(user.tenant_id)), headers=user.headers,
                         name="/storage/v1/object [download]", catch_response=True) as r:
        if r.status_code != 200:
            r.failure(f"download: HTTP {r.status_code}")
        elif r.content == seed_bytes(user.other_tenant):
            r.failure("download returned the other tenant's object")
            record_violation("isolation_violations")
        elif r.content != seed_bytes(user.tenant_id):
            r.failure("the seed object came back with other bytes")
            record_violation("lost_writes")


def list_seed_folder(user: Any) -> None:
    body = {"prefix": "seed", "limit": 10, "offset": 0, "sortBy": {"column": "name", "order": "asc"}}
    with user.client.post(f"/storage/v1/object/list/{BUCKET}", json=body, headers=user.headers,
                          name="/storage/v1/object/list [list]", catch_response=True) as r:
        if r.status_code != 200:
            r.failure(f"list: HTTP {r.status_code}")
            return
        names = {item.get("name") for item in r.json()}
        if f"{user.other_tenant}.bin" in names:
            r.failure("the listing shows the other tenant's object")
            record_violation("isolation_violations")


def forbidden_write(user: Any) -> None:
    """bob (role user) may not upload, replace or delete: 403."""
    method, url, body, name = random.choice([
        ("POST", _object_url(f"lt/bob-{uuid.uuid4().hex[:8]}.bin"), b"bob", "/storage/v1/object [bob upload]"),
        ("PUT", _object_url(seed_name(user.tenant_id)), b"bob", "/storage/v1/object [bob replace]"),
        ("DELETE", f"/storage/v1/object/{BUCKET}", None, "/storage/v1/object [bob delete]"),
    ])
    kwargs: dict[str, Any] = {"json": {"prefixes": [seed_name(user.tenant_id)]}} if body is None else \
        {"data": body, "headers": {**user.headers, **OCTET_STREAM}}
    kwargs.setdefault("headers", user.headers)
    with user.client.request(method, url, name=name, catch_response=True, **kwargs) as r:
        if r.status_code == 403:
            r.success()
        elif not over_budget(r, f"bob's storage {method}"):
            r.failure(f"bob's storage {method} answered {r.status_code}, expected 403")
            record_violation("rbac_violations")


ADMIN_TASKS = {upload_object: 1, read_back_object: 1, cross_tenant_download: 1}
USER_TASKS = {download_seed: 1, list_seed_folder: 1, forbidden_write: 1}


# -- set-up and clean-up (master or local runner only) ------------------------
def _admin_headers(environment) -> list[tuple[str, dict[str, str]]]:
    from locust.runners import WorkerRunner

    from kpi.target import loopback_error
    from locustfiles.personas import ADMIN_EMAILS, TENANT_1, TENANT_2, login_token

    if isinstance(environment.runner, WorkerRunner) or loopback_error(environment.host or ""):
        return []
    tenants = dict(zip(ADMIN_EMAILS, (TENANT_1, TENANT_2), strict=True))
    return [(tenants[email], {"Authorization": f"Bearer {login_token(environment.host, email)}"})
            for email in ADMIN_EMAILS]


@events.test_start.add_listener
def _create_buckets(environment, **_kwargs) -> None:
    """Each tenant's ``loadtest`` bucket (same id, two tenants) and its seed."""
    import requests

    for tenant_id, headers in _admin_headers(environment):
        created = requests.post(f"{environment.host}/storage/v1/bucket", json={"id": BUCKET}, headers=headers,
                                timeout=30)
        if created.status_code not in (200, 409):
            created.raise_for_status()
        requests.put(f"{environment.host}{_object_url(seed_name(tenant_id))}", data=seed_bytes(tenant_id),
                     headers={**headers, **OCTET_STREAM}, timeout=30).raise_for_status()


@after_load
def _remove_buckets(environment) -> None:
    """Empty and delete the buckets, so repeated runs meet the same storage."""
    import requests

    try:
        for tenant_id, headers in _admin_headers(environment):
            for method, path in (("POST", f"/bucket/{BUCKET}/empty"), ("DELETE", f"/bucket/{BUCKET}")):
                response = requests.request(method, f"{environment.host}/storage/v1{path}", json={},
                                            headers=headers, timeout=120)
                if response.status_code >= 400:
                    log.warning("storage cleanup for tenant %s: %s %s: HTTP %s", tenant_id, method, path,
                                response.status_code)
    except requests.RequestException as exc:  # the verdict matters more than the cleanup
        log.warning("storage cleanup skipped: %s", exc)
