"""``/storage/v1``: Supabase Storage's routes, as ``storage3`` calls them.

Every request runs under the caller's claims (``tenant_transaction``), so
PostgreSQL's RLS decides which buckets and objects exist for it: another
tenant's answer 404.  Casbin decides what a role may do (admins write;
users list, download and sign downloads).  Signed URLs carry their own
HMAC'd grant instead of a JWT.
"""
from __future__ import annotations

from flask import Flask, Response, request

from gateway import openapi
from gateway.settings import Settings
from gateway.storage import bucket_routes, object_routes, signed_routes  # noqa: F401  (register their routes)
from gateway.storage.backends import open_backend
from gateway.storage.errors import StorageError
from gateway.storage.openapi_paths import storage_paths
from gateway.storage.service import ObjectPathConverter, StorageService, bp
from gateway.storage.signing import UrlSigner, derive_key
from gateway.storage.sweeper import start_periodic_sweep


@bp.route("/<objectpath:rest>", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
def unknown_route(rest: str) -> Response:
    raise StorageError(404, "route_not_found", f"no storage route {request.method} /storage/v1/{rest}")


def init_app(app: Flask) -> None:
    settings: Settings = app.config["APPRUN_SETTINGS"]
    app.url_map.converters["objectpath"] = ObjectPathConverter
    service = StorageService(settings, open_backend(settings),
                             UrlSigner(derive_key(settings), settings.storage_signed_url_max_expiry_s))
    app.extensions["apprun.storage"] = service
    app.register_blueprint(bp)
    openapi.register_fragment(app, lambda: storage_paths(app))
    if settings.storage_sweep_interval_s > 0:
        start_periodic_sweep(app, settings.storage_sweep_interval_s, settings.storage_orphan_grace_s)
