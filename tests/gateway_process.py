"""An extra gateway process on the session's stack, with its own settings
(tests that need small timeouts or throttle limits, without changing the
session gateway other tests share)."""
from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from stack import stack
from tests.conftest import free_port

START_TIMEOUT_S = 60.0


@contextlib.contextmanager
def extra_gateway(running_stack: Any, log_dir: Path, **settings: Any) -> Iterator[str]:
    """Yield the URL of a gateway started with ``APPRUN_<NAME>=value`` for
    each keyword; stop it (by its PID) afterwards."""
    config, state = running_stack
    env = stack.service_env(config, state, stack.load_secrets(config))
    port = free_port()
    env.update({"APPRUN_GATEWAY_PORT": str(port), "APPRUN_GATEWAY_WORKERS": "1"})
    env.update({f"APPRUN_{name.upper()}": str(value) for name, value in settings.items()})
    log_path = log_dir / f"gateway-{port}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "gateway"], env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://{config.host}:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gateway exited: {log_path.read_text(errors='replace')[-2000:]}")
            try:
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"gateway on {url} did not start")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
