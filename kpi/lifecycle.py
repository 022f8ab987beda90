"""The embedded stack for a run without --host: start what is missing,
stop only what this run started."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("apprun.kpi")


class StackStartError(RuntimeError):
    pass


@dataclass
class EmbeddedStack:
    config: Any                                  # stack.config.StackConfig
    gateway_url: str
    started: list[str] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def secrets_file(self):  # type: ignore[no-untyped-def]
        return self.config.state_dir / "secrets.json"

    def stop(self) -> None:
        """Stops only the services this run started; a stack that was already
        running is left as it was."""
        if not self.started:
            return
        from stack import stack

        stack.down(self.config, log=log.info, only=self.started)
        self.started = []


def start_embedded_stack() -> EmbeddedStack:
    from stack import stack
    from stack.config import StackConfig

    config = StackConfig.from_env()
    log.info("no --host: starting the embedded stack in %s", config.state_dir)
    try:
        state, started = stack.up_missing(config, log=log.info)
    except (RuntimeError, TimeoutError, OSError) as exc:  # the same errors `apprun-stack up` reports
        raise StackStartError(str(exc)) from None
    return EmbeddedStack(config, state.gateway_url, list(started),
                         {name: proc.pid for name, proc in state.processes.items()})
