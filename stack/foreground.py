"""``python -m stack.foreground``: ``apprun-stack up``, then stay in the
foreground until SIGTERM/SIGINT or until one of the services dies, and stop
the services this call started.

``apprun-stack up`` starts detached services and returns, which suits a
shell; a container lives only as long as its first process, so the image
(``Dockerfile``, ``stack/docker-compose.yml``) runs this instead.
"""
from __future__ import annotations

import signal
import sys
import threading

from stack import stack
from stack.config import StackConfig

POLL_S = 1.0


def main() -> int:
    config = StackConfig.from_env()
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        state, started = stack.up_missing(config)
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"stack: cannot start: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"stack is up: gateway {state.gateway_url}; logs in {config.logs_dir}", flush=True)
    try:
        while not stopping.wait(POLL_S):
            dead = sorted(name for name in started if not state.processes[name].alive())
            if dead:
                print(f"stack: {', '.join(dead)} exited (see {config.logs_dir}); stopping", file=sys.stderr,
                      flush=True)
                return 1
        return 0
    finally:
        stack.down(config, only=started)


if __name__ == "__main__":
    raise SystemExit(main())
