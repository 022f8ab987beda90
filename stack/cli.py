"""``apprun-stack up | down | status`` - the real services, no Docker, no root."""
from __future__ import annotations

import argparse
import json
import sys

from stack import stack
from stack.config import StackConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="apprun-stack", description=__doc__)
    parser.add_argument("--state-dir", help="where state, logs and data live (default .apprun, APPRUN_STATE_DIR)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start every service and wait until each is healthy (idempotent)")
    sub.add_parser("down", help="stop the processes `up` started, gracefully then forcefully")
    sub.add_parser("status", help="say what is up (JSON)")
    args = parser.parse_args(argv)
    overrides = {"state_dir": args.state_dir} if args.state_dir else {}
    config = StackConfig.from_env(overrides)
    try:
        if args.command == "up":
            state = stack.up(config, detached=True)  # the services run on after this command, until `down`
            print(json.dumps({k: v for k, v in state.to_json().items() if k != "processes"}, indent=2))
            print(f"stack is up; state in {config.state_file}")
        elif args.command == "down":
            stack.down(config)
            print("stack is down")
        else:
            report = stack.status(config)
            print(json.dumps(report, indent=2))
            services = report["services"]
            return 0 if services and all(s["running"] for s in services.values()) else 3
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"apprun-stack {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
