"""apprun-stack: up, status, up again (idempotent), down, up again; nothing left behind."""
from __future__ import annotations

import json
import subprocess
import sys

import psutil
import requests

from tests.conftest import free_port


def run_cli(state_dir, env_extra, *args) -> subprocess.CompletedProcess:
    import os
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-m", "stack", "--state-dir", str(state_dir), *args],
                          capture_output=True, text=True, env=env, timeout=180)


def test_up_status_down_cycle(tmp_path, running_stack) -> None:
    _, session_state = running_stack
    env = {
        "APPRUN_PG_PORT": str(free_port()), "APPRUN_GATEWAY_PORT": str(free_port()),
        # reuse the session's Temporal server to keep the test short; its own worker still starts
        "APPRUN_TEMPORAL_ADDRESS": session_state.temporal_address,
    }
    state_dir = tmp_path / "state"
    first = run_cli(state_dir, env, "up")
    assert first.returncode == 0, first.stderr
    state = json.loads((state_dir / "stack.json").read_text())
    for key in ("gateway_url", "database_url", "temporal_address", "temporal_ui_url"):
        assert key in state
    pids = dict(state["pids"])
    assert set(pids) == {"postgres", "worker", "gateway"}
    assert requests.get(state["gateway_url"] + "/readyz", timeout=5).status_code == 200

    status = run_cli(state_dir, env, "status")
    assert status.returncode == 0 and json.loads(status.stdout)["gateway_ready"] is True
    again = run_cli(state_dir, env, "up")
    assert again.returncode == 0 and json.loads((state_dir / "stack.json").read_text())["pids"] == pids

    children = [p.pid for pid in pids.values() for p in psutil.Process(pid).children(recursive=True)]
    down = run_cli(state_dir, env, "down")
    assert down.returncode == 0, down.stderr
    for pid in list(pids.values()) + children:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, pid
    assert run_cli(state_dir, env, "status").returncode == 3

    restarted = run_cli(state_dir, env, "up")
    assert restarted.returncode == 0, restarted.stderr
    token = requests.post(json.loads((state_dir / "stack.json").read_text())["gateway_url"] + "/auth/login",
                          json={"email": "alice@test.com", "password": "apprun-dev-password"}, timeout=10)
    assert token.status_code == 200
    assert run_cli(state_dir, env, "down").returncode == 0


def test_port_in_use_is_a_clear_error(tmp_path, running_stack) -> None:
    config, state = running_stack
    env = {"APPRUN_PG_PORT": str(config.pg_port), "APPRUN_TEMPORAL_ADDRESS": state.temporal_address}
    result = run_cli(tmp_path / "state", env, "up")
    assert result.returncode == 1
    assert "already in use" in result.stderr and "APPRUN_PG_PORT" in result.stderr
