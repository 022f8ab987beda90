"""A service whose start-up fails after it was spawned is stopped, not left
running: ``stack.up`` only cleans up services it recorded, and a service is
recorded once its start function returned."""
from __future__ import annotations

from pathlib import Path

import pytest

from stack import postgres, temporal
from stack.processes import ServiceProcess, stop
from tests.conftest import stack_config


def test_temporal_is_stopped_when_its_start_up_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spawned: list[ServiceProcess] = []
    real_spawn = temporal.spawn

    def recording_spawn(*args, **kwargs) -> ServiceProcess:   # type: ignore[no-untyped-def]
        service = real_spawn(*args, **kwargs)
        spawned.append(service)
        return service

    def refused_retention(_config) -> None:   # type: ignore[no-untyped-def]
        # What the dev server answers for a retention below its minimum.
        raise RuntimeError("namespace update refused")

    monkeypatch.setattr(temporal, "spawn", recording_spawn)
    monkeypatch.setattr(temporal, "set_retention", refused_retention)
    config = stack_config(tmp_path / "state")
    try:
        with pytest.raises(RuntimeError, match="namespace update refused"):
            temporal.start(config)
        assert len(spawned) == 1
        assert not spawned[0].alive(), "the dev server whose start-up failed is still running"
    finally:
        for service in spawned:   # on failure: leave nothing behind
            if service.alive():
                stop(service, timeout_s=10)


def test_postgres_is_stopped_when_it_does_not_become_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spawned: list[ServiceProcess] = []
    real_spawn = postgres.spawn

    def recording_spawn(*args, **kwargs) -> ServiceProcess:   # type: ignore[no-untyped-def]
        service = real_spawn(*args, **kwargs)
        spawned.append(service)
        return service

    def never_ready(*_args, **_kwargs) -> None:   # type: ignore[no-untyped-def]
        raise TimeoutError("PostgreSQL did not become ready within 60 s")

    monkeypatch.setattr(postgres, "spawn", recording_spawn)
    monkeypatch.setattr(postgres, "wait_until", never_ready)
    config = stack_config(tmp_path / "state")
    try:
        with pytest.raises(TimeoutError):
            postgres.start(config, "a-superuser-password-for-this-test")
        assert len(spawned) == 1
        assert not spawned[0].alive(), "the PostgreSQL whose start-up failed is still running"
    finally:
        for service in spawned:
            if service.alive():
                stop(service, timeout_s=10)
