"""Orphan cleanup: bytes with no metadata row (a crash between the write
and the commit, or between a commit and the deletion of replaced bytes) and
interrupted writes, once older than a grace period that no live upload can
still be inside.

The gateway role sees one tenant at a time (RLS), so keys are checked per
tenant, under that tenant's claims: the key prefix names the tenant."""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass

from flask import Flask

from gateway.db import tenant_transaction
from gateway.storage.backends import tenant_of_key

log = logging.getLogger(__name__)
BATCH = 1000


@dataclass(frozen=True)
class SweepResult:
    orphans: int
    partials: int


def sweep(app: Flask, grace_s: float) -> SweepResult:
    backend = app.extensions["apprun.storage"].backend
    cutoff = time.time() - grace_s
    partials = backend.sweep_partials(cutoff)
    candidates: dict[str, list[str]] = defaultdict(list)
    for key, mtime in backend.list_keys():
        if mtime < cutoff:
            candidates[tenant_of_key(key)].append(key)
    orphans = 0
    with app.app_context():
        for tenant, keys in candidates.items():
            try:
                uuid.UUID(tenant)
            except ValueError:
                continue
            claims = {"tenant_id": tenant, "role": "storage_sweeper", "sub": ""}
            for start in range(0, len(keys), BATCH):
                batch = keys[start:start + BATCH]
                with tenant_transaction(claims, single_statement=True) as cur:
                    cur.execute("SELECT storage_key FROM storage_objects WHERE storage_key = ANY(%s)", (batch,))
                    referenced = {row[0] for row in cur.fetchall()}
                unreferenced = [key for key in batch if key not in referenced]
                failed = backend.delete_many(unreferenced)
                if failed:
                    log.warning("storage sweep: could not delete %d orphaned objects (first: %s); next sweep",
                                len(failed), failed[0])
                orphans += len(unreferenced) - len(failed)
    if orphans or partials:
        log.info("storage sweep: %d orphaned objects, %d interrupted writes removed", orphans, partials)
    return SweepResult(orphans, partials)


def start_periodic_sweep(app: Flask, interval_s: float, grace_s: float) -> None:
    """A daemon thread (a greenlet under gevent) that sweeps every interval."""

    def loop() -> None:
        while True:
            time.sleep(interval_s)
            try:
                sweep(app, grace_s)
            except Exception:
                log.warning("storage sweep failed", exc_info=True)

    threading.Thread(target=loop, name="storage-sweeper", daemon=True).start()
