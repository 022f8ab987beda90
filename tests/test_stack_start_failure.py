"""A service whose start-up fails after it was spawned is stopped, not left
running: ``stack.up`` only cleans up services it recorded, and a service is
recorded once its start function returned."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

from stack import postgres, temporal
from stack.processes import ServiceProcess, stop
from tests.conftest import stack_config


@contextmanager
def spawned_by(module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[ServiceProcess]]:
    """The services ``module`` spawns inside the block (its real ``spawn``,
    recorded); any still running at the end is stopped, so a failing test
    leaves nothing behind."""
    spawned: list[ServiceProcess] = []
    real_spawn = module.spawn

    def recording_spawn(*args, **kwargs) -> ServiceProcess:   # type: ignore[no-untyped-def]
        service = real_spawn(*args, **kwargs)
        spawned.append(service)
        return service

    monkeypatch.setattr(module, "spawn", recording_spawn)
    try:
        yield spawned
    finally:
        for service in spawned:
            if service.alive():
                stop(service, timeout_s=10)


def test_temporal_is_stopped_when_its_start_up_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused_retention(_config) -> None:   # type: ignore[no-untyped-def]
        # What the dev server answers for a retention below its minimum.
        raise RuntimeError("namespace update refused")

    monkeypatch.setattr(temporal, "set_retention", refused_retention)
    with spawned_by(temporal, monkeypatch) as spawned:
        with pytest.raises(RuntimeError, match="namespace update refused"):
            temporal.start(stack_config(tmp_path / "state"))
        assert len(spawned) == 1
        assert not spawned[0].alive(), "the dev server whose start-up failed is still running"


def test_postgres_is_stopped_when_it_does_not_become_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def never_ready(*_args, **_kwargs) -> None:   # type: ignore[no-untyped-def]
        raise TimeoutError("PostgreSQL did not become ready within 60 s")

    monkeypatch.setattr(postgres, "wait_until", never_ready)
    with spawned_by(postgres, monkeypatch) as spawned:
        with pytest.raises(TimeoutError):
            postgres.start(stack_config(tmp_path / "state"), "a-superuser-password-for-this-test")
        assert len(spawned) == 1
        assert not spawned[0].alive(), "the PostgreSQL whose start-up failed is still running"
