"""One typed settings object, filled from ``APPRUN_*`` environment variables.

``create_app(config)`` accepts a mapping with the same field names (lower
case, without the prefix) so tests can configure the app without touching
the environment.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

ENV_PREFIX = "APPRUN_"

#: Tables and views the data API exposes by default.  Tables holding secrets
#: (users.password_hash) or binaries (functions) have routes of their own.
DEFAULT_DATA_TABLES = (
    "products",
    "projects",
    "email_outbox",
    "workflow_executions",
    "tenant_stats",
    "workflow_execution_stats",
)


class SettingsError(ValueError):
    """A setting has a value that cannot be used."""


@dataclass(frozen=True)
class Settings:
    # --- database -------------------------------------------------------
    database_url: str = "postgresql://apprun_gateway:apprun_gateway@127.0.0.1:54329/apprun"
    db_pool_size: int = 20
    db_pool_timeout_s: float = 5.0
    db_statement_timeout_ms: int = 5000

    # --- identity -------------------------------------------------------
    jwt_algorithm: str = "HS256"
    jwt_secret: str = ""
    jwt_private_key_file: str = ""
    jwt_ttl_s: int = 3600
    jwt_issuer: str = "apprun"
    jwt_leeway_s: int = 0
    # Verified tokens are cached (until they expire) so repeated requests
    # with the same token skip signature checks.
    jwt_cache_size: int = 4096
    password_hash_time_cost: int = 2
    password_hash_memory_kib: int = 19456
    # Native threads for argon2: more than the core count buys no speed and
    # each one keeps its own malloc arena (see auth/passwords.py).
    password_hash_threads: int = 2
    # Casbin files; empty means the ones shipped in gateway/rbac/.
    rbac_model_file: str = ""
    rbac_policy_file: str = ""

    # --- HTTP -----------------------------------------------------------
    max_body_bytes: int = 1024 * 1024
    data_tables: tuple[str, ...] = DEFAULT_DATA_TABLES
    data_read_only_tables: tuple[str, ...] = ("email_outbox", "workflow_executions")
    data_max_rows: int = 1000
    data_allow_unfiltered_mutations: bool = False

    # --- functions ------------------------------------------------------
    function_max_module_bytes: int = 2 * 1024 * 1024
    function_fuel: int = 50_000_000
    function_fuel_ceiling: int = 1_000_000_000
    function_memory_bytes: int = 16 * 1024 * 1024
    function_memory_ceiling_bytes: int = 128 * 1024 * 1024
    function_timeout_ms: int = 1000
    function_timeout_ceiling_ms: int = 10_000
    function_epoch_tick_ms: int = 10
    function_threads: int = 4
    function_cache_dir: str = ""

    # --- workflows ------------------------------------------------------
    temporal_address: str = ""
    temporal_namespace: str = "default"
    temporal_task_queue: str = "apprun-workflows"
    workflow_start_timeout_s: float = 10.0

    # --- object storage (/storage/v1) -----------------------------------
    # File backend root; the stack points it at <state dir>/storage.
    storage_dir: str = ".apprun/storage"
    # S3-compatible backend (MinIO, S3) instead of files when the endpoint is set.
    storage_s3_endpoint: str = ""
    storage_s3_bucket: str = "apprun-storage"
    storage_s3_access_key: str = ""
    storage_s3_secret_key: str = ""
    storage_s3_region: str = "us-east-1"
    # Key of the signed-URL HMAC; empty derives one from the JWT secret (or key file).
    storage_signing_secret: str = ""
    storage_signed_url_max_expiry_s: int = 7 * 24 * 3600
    storage_max_object_bytes: int = 200 * 1024 * 1024
    storage_max_path_bytes: int = 1024
    # Per-tenant quota by tenants.plan (an unknown plan gets the free quota).
    storage_free_quota_bytes: int = 1024 * 1024 * 1024
    storage_free_quota_objects: int = 100_000
    storage_pro_quota_bytes: int = 100 * 1024 * 1024 * 1024
    storage_pro_quota_objects: int = 10_000_000
    # Bytes with no metadata row (a crash between write and commit) older
    # than the grace period are deleted every interval (0 = never).
    storage_orphan_grace_s: int = 3600
    storage_sweep_interval_s: int = 3600

    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = ENV_PREFIX + f.name.upper()
            if f.name != "extra" and key in environ:
                values[f.name] = environ[key]
        return cls.from_mapping(values)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "Settings":
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise SettingsError(f"unknown setting(s): {', '.join(unknown)}")
        converted = {name: _convert(known[name], value) for name, value in values.items()}
        settings = cls(**converted)
        settings.validate()
        return settings

    def merged(self, overrides: Mapping[str, Any]) -> "Settings":
        current = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        current.update(overrides)
        return Settings.from_mapping(current)

    def validate(self) -> None:
        allowed = {"HS256", "RS256", "EdDSA"}
        if self.jwt_algorithm not in allowed:
            raise SettingsError(f"APPRUN_JWT_ALGORITHM must be one of {sorted(allowed)}")
        if self.jwt_algorithm == "HS256" and self.jwt_secret and len(self.jwt_secret) < 32:
            raise SettingsError("APPRUN_JWT_SECRET must be at least 32 characters")
        for name in ("db_pool_size", "jwt_ttl_s", "max_body_bytes", "data_max_rows"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"APPRUN_{name.upper()} must be positive")


def _convert(f: dataclasses.Field, value: Any) -> Any:
    """Convert an environment string (or a test's value) to the field type."""
    if not isinstance(value, str):
        return tuple(value) if f.type == "tuple[str, ...]" and not isinstance(value, tuple) else value
    kind = f.type
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            lowered = value.strip().lower()
            if lowered not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                raise ValueError(value)
            return lowered in {"1", "true", "yes", "on"}
        if kind == "tuple[str, ...]":
            return tuple(part.strip() for part in value.split(",") if part.strip())
    except ValueError as exc:
        raise SettingsError(f"{ENV_PREFIX}{f.name.upper()}: cannot read {value!r} as {kind}") from exc
    return value
