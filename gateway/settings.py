"""One typed settings object, filled from ``APPRUN_*`` environment variables.

``read_env``/``typed_fields``/``parse_bool`` below are the one loader for
every ``APPRUN_*`` dataclass: the stack's ``StackConfig`` uses them too.

``create_app(config)`` accepts a mapping with the same field names (lower
case, without the prefix) so tests can configure the app without touching
the environment.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    # Server-side prepared statements per pooled connection (LRU by SQL
    # shape); 0 sends every statement as a simple query instead.
    db_prepared_statements: int = 256

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
    # Login throttling (auth/throttle.py): failures allowed per account and
    # per client address before 429s with doubling delays; attempts at once
    # for a key that failed recently; failures forgotten after the window.
    login_account_free_failures: int = 5
    login_address_free_failures: int = 20
    login_delay_base_s: float = 1.0
    login_delay_max_s: float = 60.0
    login_failure_window_s: float = 900.0
    login_concurrent_attempts: int = 1
    # Casbin files; empty means the ones shipped in gateway/rbac/.
    rbac_model_file: str = ""
    rbac_policy_file: str = ""

    # --- HTTP -----------------------------------------------------------
    max_body_bytes: int = 1024 * 1024
    # JSON bodies nested deeper are refused (400): parsers and serialisers
    # recurse, and 50,000 levels raised RecursionError.
    max_json_depth: int = 64
    # Request line + headers must arrive within this many seconds of their
    # first byte (slow-header clients); an idle keep-alive connection, or a
    # read or write stalled this long, is closed.
    http_header_timeout_s: float = 10.0
    http_idle_timeout_s: float = 20.0
    # Total size of the header block; above it the answer is a JSON 431.
    http_max_header_bytes: int = 32 * 1024
    data_tables: tuple[str, ...] = DEFAULT_DATA_TABLES
    data_read_only_tables: tuple[str, ...] = ("email_outbox", "workflow_executions")
    data_max_rows: int = 1000
    data_allow_unfiltered_mutations: bool = False
    # Bounds on what one data request may ask for (see gateway/data/grammar.py):
    # select items (each costs response bytes per row), or=()/and=() nesting
    # (each level costs parser and planner work), and the response body.
    data_max_select_items: int = 32
    data_max_logic_depth: int = 8
    data_max_response_bytes: int = 8 * 1024 * 1024

    # --- functions ------------------------------------------------------
    function_max_module_bytes: int = 2 * 1024 * 1024
    function_fuel: int = 50_000_000
    function_fuel_ceiling: int = 1_000_000_000
    function_memory_bytes: int = 16 * 1024 * 1024
    function_memory_ceiling_bytes: int = 128 * 1024 * 1024
    function_timeout_ms: int = 1000
    # 2 s, not 10 s: one call holds a pool thread and overdraws its tenant's
    # time budget (function_time_burst_ms) by at most 1 s, not 9 s.
    function_timeout_ceiling_ms: int = 2000
    function_epoch_tick_ms: int = 10
    # Elements per table a call may hold (8 bytes each, up to 4 tables); the
    # reservation comes out of the function's memory_bytes.
    function_table_elements: int = 10_000
    # wasmtime's pooling allocator: pre-reserved slots reset between calls
    # instead of fresh mappings per call (gateway/functions/engine.py).
    function_pooling: bool = True
    function_threads: int = 4
    # Nice value of the WASM pool's threads (0-19; 0 = as the gateway): a
    # spinning call yields the CPU to the other tenants' requests.
    function_thread_nice: int = 10
    # A call running longer than this drops to SCHED_IDLE until it ends
    # (gateway/functions/demotion.py): a spinning call then gets only the CPU
    # nobody else wants.  0: calls keep their class.
    function_demote_after_ms: int = 50
    # Fuel slice of a call run inline on the gevent hub instead of the pool
    # (gateway/functions/inline.py): only modules seen to fit it, cut and
    # re-run in the pool when an attempt does not.  0: every call in the pool.
    function_inline_fuel: int = 200_000
    function_cache_dir: str = ""
    # Per-tenant WASM budgets by tenants.plan (gateway/functions/fairness.py):
    # calls at once (each below function_threads; one spinning call takes a
    # core, so 1 on the 2-core reference machine), WASM milliseconds per
    # second with a burst, and how long a call waits for its own tenant's slot.
    function_budgets_enabled: bool = True
    function_concurrency_free: int = 1
    function_concurrency_pro: int = 1
    function_ms_per_s_free: int = 500
    function_ms_per_s_pro: int = 1000
    function_time_burst_ms: int = 1000
    # 1 s, not 250 ms: under load the hub resumes a waiting call late, and a
    # quiet tenant's calls then timed out waiting for a slot that was free
    # (kpi runs: 26-157 refused of ~3,200 invokes at 250 ms).
    function_queue_wait_ms: int = 1000

    # --- workflows ------------------------------------------------------
    temporal_address: str = ""
    temporal_namespace: str = "default"
    temporal_task_queue: str = "apprun-workflows"
    workflow_start_timeout_s: float = 10.0

    # --- tenant budgets (gateway/budgets.py; defaults per plan there) --------
    # Off: no per-tenant limit anywhere (the "unfair" reference setting).
    budgets_enabled: bool = True
    # JSON merged over budgets.DEFAULT_PLAN_BUDGETS, e.g. '{"free": {"data_rps": 50}}';
    # null means unlimited; a new plan name starts from the default plan's budgets.
    budget_plans: str = ""
    # The plan of a tenant whose tenants.plan names no known plan.
    budget_default_plan: str = "free"
    # tenants.plan is cached this long per tenant (a plan change applies within it).
    budget_plan_cache_ttl_s: float = 30.0
    # How long a request of a tenant over its share of the hub waits for the
    # hub to be idle before its 429 (gateway/fair_share.py).
    fair_share_wait_ms: int = 1000
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
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        return cls.from_mapping(read_env(cls, environ))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        settings = cls(**typed_fields(cls, values))
        settings.validate()
        return settings

    def merged(self, overrides: Mapping[str, Any]) -> Settings:
        current = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        current.update(overrides)
        return Settings.from_mapping(current)

    def validate(self) -> None:
        allowed = {"HS256", "RS256", "EdDSA"}
        if self.jwt_algorithm not in allowed:
            raise SettingsError(f"APPRUN_JWT_ALGORITHM must be one of {sorted(allowed)}")
        if self.jwt_algorithm == "HS256" and self.jwt_secret and len(self.jwt_secret) < 32:
            raise SettingsError("APPRUN_JWT_SECRET must be at least 32 characters")
        for name in ("db_pool_size", "fair_share_wait_ms", "jwt_ttl_s", "max_body_bytes", "data_max_rows",
                     "data_max_select_items", "data_max_logic_depth", "data_max_response_bytes"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"APPRUN_{name.upper()} must be positive")
        for name in _POSITIVE_EDGE_SETTINGS:
            if getattr(self, name) <= 0:
                raise SettingsError(f"APPRUN_{name.upper()} must be positive")
        for name in ("function_demote_after_ms", "function_inline_fuel"):
            if getattr(self, name) < 0:
                raise SettingsError(f"APPRUN_{name.upper()} must be 0 (off) or positive")


# Limits of the HTTP edge and of login throttling (0 would disable a guard).
_POSITIVE_EDGE_SETTINGS = (
    "max_json_depth", "http_header_timeout_s", "http_idle_timeout_s", "http_max_header_bytes",
    "login_account_free_failures", "login_address_free_failures", "login_delay_base_s", "login_delay_max_s",
    "login_failure_window_s", "login_concurrent_attempts",
)


# --- the one loader for APPRUN_* dataclasses (Settings, stack's StackConfig) --

_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def parse_bool(text: str) -> bool:
    """The one boolean reader: a typo is an error, never a silent False."""
    lowered = text.strip().lower()
    if lowered in _TRUE_WORDS:
        return True
    if lowered in _FALSE_WORDS:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def read_env(cls: type, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``APPRUN_<FIELD>`` values present in ``environ`` for the fields of
    the dataclass ``cls``, still as strings."""
    environ = os.environ if environ is None else environ
    names = (f.name for f in dataclasses.fields(cls) if f.name != "extra")
    return {name: environ[ENV_PREFIX + name.upper()] for name in names if ENV_PREFIX + name.upper() in environ}


def typed_fields(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (environment strings or a test's Python values) converted
    to the types of the dataclass ``cls``'s fields; unknown names refused."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise SettingsError(f"unknown setting(s): {', '.join(unknown)}")
    return {name: convert(name, str(known[name].type), value) for name, value in values.items()}


def convert(name: str, kind: str, value: Any) -> Any:
    """Convert one value to the field type named ``kind`` (annotations are
    strings under ``from __future__ import annotations``)."""
    try:
        if isinstance(value, str):
            if kind == "int":
                return int(value)
            if kind == "float":
                return float(value)
            if kind == "bool":
                return parse_bool(value)
            if kind == "tuple[str, ...]":
                return tuple(part.strip() for part in value.split(",") if part.strip())
            if kind == "Path":
                return Path(value)
            return value
        if kind == "tuple[str, ...]" and not isinstance(value, tuple):
            return tuple(value)
        if kind == "Path":
            return Path(value)
        if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if kind == "str":
            # A test's mapping for a JSON-valued setting (budget_plans) is
            # kept as the JSON text the environment would carry.
            return json.dumps(value) if isinstance(value, (Mapping, list)) else str(value)
        return value
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{ENV_PREFIX}{name.upper()}: cannot read {value!r} as {kind}") from exc
