"""Bring the whole stack up, report on it and take it down.

``.apprun/stack.json`` records the URLs and the PID (with start time) of
every process ``up`` started; ``down`` stops exactly those.  ``up`` is
idempotent: services already running are kept, missing ones are started.
The services ``up`` starts stop when the calling process dies (tests, the
kpi plugin, bench scripts); only ``apprun-stack up`` starts them detached,
to run until ``down`` (``stack.processes``).

The state directory holds secrets: the gateway role's database password
(in ``stack.json``'s database URL and in ``secrets.json``), the PostgreSQL
superuser password and the JWT secret.  It is made private (0700) and those
files 0600 on every command, also when they already exist with wider modes.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import stat
import sys
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stack import database, postgres, temporal
from stack.config import StackConfig
from stack.processes import ServiceProcess, spawn, stop, wait_until

# Stopped in this order: clients before the servers they use.
STOP_ORDER = ("gateway", "worker", "temporal", "postgres")


@dataclass
class StackState:
    gateway_url: str = ""
    database_url: str = ""
    temporal_address: str = ""
    temporal_ui_url: str = ""
    state_dir: str = ""
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "gateway_url": self.gateway_url,
            "database_url": self.database_url,
            "temporal_address": self.temporal_address,
            "temporal_ui_url": self.temporal_ui_url,
            "state_dir": self.state_dir,
            "processes": {name: proc.to_json() for name, proc in self.processes.items()},
            "pids": {name: proc.pid for name, proc in self.processes.items()},
        }

    @classmethod
    def load(cls, path: Path) -> StackState:
        if not path.exists():
            return cls()
        data = json.loads(path.read_text())
        processes = {name: ServiceProcess.from_json(p) for name, p in data.get("processes", {}).items()}
        return cls(data.get("gateway_url", ""), data.get("database_url", ""), data.get("temporal_address", ""),
                   data.get("temporal_ui_url", ""), data.get("state_dir", ""), processes)

    def save(self, path: Path) -> None:
        write_private(path, json.dumps(self.to_json(), indent=2) + "\n")


PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with a file only its owner can read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), PRIVATE_FILE_MODE)  # an old .tmp keeps its mode otherwise
        handle.write(text)
    tmp.replace(path)


def secure_state_dir(config: StackConfig) -> None:
    """The state directory 0700 and its secret files 0600, whatever they were.

    As root, PostgreSQL runs as the system user ``apprun-pg``, which must
    traverse the directory to reach ``pgdata`` (its own, 0700): the
    directory then belongs to that user's group with mode 0710, so no other
    user can enter it either."""
    state_dir = config.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    group_gid = _postgres_group_gid(config)
    if group_gid is None:
        state_dir.chmod(PRIVATE_DIR_MODE)
    else:
        os.chown(state_dir, -1, group_gid)
        state_dir.chmod(PRIVATE_DIR_MODE | stat.S_IXGRP)
    for name in ("stack.json", "secrets.json"):
        path = state_dir / name
        if path.exists():
            path.chmod(PRIVATE_FILE_MODE)


def _postgres_group_gid(config: StackConfig) -> int | None:
    if config.database_url:
        return None  # no embedded PostgreSQL
    user = postgres.run_as_user()
    if user is None:
        return None
    import pwd

    return pwd.getpwnam(user).pw_gid


@contextlib.contextmanager
def _locked(config: StackConfig) -> Iterator[None]:
    """One stack command at a time per state directory."""
    secure_state_dir(config)
    with open(config.state_dir / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def load_secrets(config: StackConfig) -> dict[str, str]:
    """Generated once per state directory and kept (0600) so restarts keep
    tokens and passwords valid."""
    path = config.state_dir / "secrets.json"
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    changed = False
    for key in ("pg_superuser_password", "gateway_db_password", "jwt_secret"):
        if key not in stored:
            stored[key] = secrets.token_urlsafe(32)
            changed = True
    if changed:
        write_private(path, json.dumps(stored, indent=2))
    return stored


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


def _port_free(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _require_free(config: StackConfig, port: int, variable: str) -> None:
    if not _port_free(config.host, port):
        raise RuntimeError(f"port {config.host}:{port} is already in use; choose another with {variable}")


def service_env(config: StackConfig, state: StackState, keys: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "APPRUN_DATABASE_URL": state.database_url,
        "APPRUN_JWT_SECRET": os.environ.get("APPRUN_JWT_SECRET") or keys["jwt_secret"],
        "APPRUN_TEMPORAL_ADDRESS": state.temporal_address,
        "APPRUN_FUNCTION_CACHE_DIR": str(config.state_dir / "wasm-cache"),
        "APPRUN_STORAGE_DIR": os.environ.get("APPRUN_STORAGE_DIR") or str(config.state_dir / "storage"),
        "APPRUN_GATEWAY_HOST": config.host,
        "APPRUN_GATEWAY_PORT": str(config.gateway_port),
        "APPRUN_GATEWAY_WORKERS": str(config.gateway_workers),
        "PYTHONUNBUFFERED": "1",
    })
    return env


def up(config: StackConfig, log=print, detached: bool = False) -> StackState:
    """Start what is missing.  ``detached``: the services outlive this
    process (``apprun-stack up``); otherwise they stop when it dies."""
    with _locked(config):
        state = StackState.load(config.state_file)
        state.processes = {n: p for n, p in state.processes.items() if p.alive()}
        state.state_dir = str(config.state_dir)
        keys = load_secrets(config)
        started: list[ServiceProcess] = []
        try:
            _up_services(config, state, keys, started, log, detached)
        except BaseException:
            for service in reversed(started):
                stop(service)
                state.processes.pop(service.name, None)
            state.save(config.state_file)
            raise
        return state


def _up_services(config: StackConfig, state: StackState, keys: dict[str, str],
                 started: list[ServiceProcess], log, detached: bool) -> None:
    def record(service: ServiceProcess) -> None:
        started.append(service)
        state.processes[service.name] = service
        state.save(config.state_file)
        log(f"started {service.name} (pid {service.pid}, log {service.log})")

    # -- PostgreSQL ------------------------------------------------------
    if config.database_url:
        server_url = config.database_url
    else:
        server_url = postgres.superuser_url(config, keys["pg_superuser_password"], "postgres")
        if "postgres" not in state.processes:
            _require_free(config, config.pg_port, "APPRUN_PG_PORT")
            record(postgres.start(config, keys["pg_superuser_password"], detached=detached))
        else:
            log(f"postgres already running (pid {state.processes['postgres'].pid})")
        # Starting PostgreSQL as root may open the directory for its user.
        secure_state_dir(config)
        database.ensure_database(server_url, config.database_name)
    owner_url = database.with_credentials(server_url, *_credentials(server_url), database=config.database_name) \
        if not config.database_url else config.database_url
    database.apply_schema(owner_url, keys["gateway_db_password"], config.seed_password)
    state.database_url = database.with_credentials(owner_url, database.GATEWAY_ROLE, keys["gateway_db_password"],
                                                   database=config.database_name)

    # -- Temporal --------------------------------------------------------
    if config.temporal_address:
        state.temporal_address = config.temporal_address
        state.temporal_ui_url = ""
    else:
        state.temporal_address = f"{config.host}:{config.temporal_port}"
        state.temporal_ui_url = temporal.ui_url(config)
        if "temporal" not in state.processes:
            _require_free(config, config.temporal_port, "APPRUN_TEMPORAL_PORT")
            _require_free(config, config.temporal_ui_port, "APPRUN_TEMPORAL_UI_PORT")
            record(temporal.start(config, detached=detached))
    env = service_env(config, state, keys)

    # -- workflow worker -------------------------------------------------
    if config.start_worker and "worker" not in state.processes:
        record(spawn("worker", [sys.executable, "-m", "gateway.workflows.worker"],
                     config.logs_dir / "worker.log", env=env, detached=detached, nice=config.background_nice))

    # -- gateway ---------------------------------------------------------
    state.gateway_url = config.gateway_url
    if "gateway" not in state.processes:
        _require_free(config, config.gateway_port, "APPRUN_GATEWAY_PORT")
        service = spawn("gateway", [sys.executable, "-m", "gateway"], config.logs_dir / "gateway.log", env=env,
                        detached=detached)
        record(service)
        wait_until(lambda: _http_ok(state.gateway_url + "/readyz"), config.start_timeout_s, service, "gateway")
    if "worker" in state.processes:
        worker = state.processes["worker"]
        wait_until(lambda: "worker ready" in Path(worker.log).read_text(errors="replace"),
                   config.start_timeout_s, worker, "workflow worker")
    state.save(config.state_file)


def _credentials(url: str) -> tuple[str, str]:
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    return unquote(parts.username or ""), unquote(parts.password or "")


def up_missing(config: StackConfig, log=print) -> tuple[StackState, list[str]]:
    """``up``, and the names of the services this call started (not those
    that were already running), for callers that must stop only their own."""
    before = StackState.load(config.state_file)
    running = {name for name, service in before.processes.items() if service.alive()}
    state = up(config, log=log)
    return state, [name for name in state.processes if name not in running]


def down(config: StackConfig, log=print, only: Iterable[str] | None = None) -> StackState:
    """Stop the stack's processes (by PID and start time), gateway first;
    ``only`` limits it to the named services."""
    wanted = None if only is None else set(only)
    with _locked(config):
        state = StackState.load(config.state_file)
        for name in STOP_ORDER + tuple(n for n in state.processes if n not in STOP_ORDER):
            service = state.processes.get(name)
            if service is None or (wanted is not None and name not in wanted):
                continue
            outcome = stop(service)
            log(f"{name} (pid {service.pid}): {outcome}")
            state.processes.pop(name)
            state.save(config.state_file)
        return state


def status(config: StackConfig) -> dict[str, Any]:
    state = StackState.load(config.state_file)
    report: dict[str, Any] = {"state_file": str(config.state_file), "services": {}}
    for name, service in state.processes.items():
        report["services"][name] = {"pid": service.pid, "running": service.alive(), "log": service.log}
    if state.gateway_url:
        try:
            report["gateway_ready"] = _http_ok(state.gateway_url + "/readyz")
        except Exception:  # noqa: BLE001
            report["gateway_ready"] = False
    report.update({k: v for k, v in state.to_json().items() if k in ("gateway_url", "temporal_address",
                                                                      "temporal_ui_url")})
    return report
