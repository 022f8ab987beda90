"""One typed loader for every APPRUN_* dataclass: the gateway's Settings
and the stack's StackConfig read the environment the same way."""
from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import Settings, SettingsError
from stack.config import StackConfig


def test_stack_config_reads_environment_then_overrides(tmp_path) -> None:
    environ = {"APPRUN_PG_PORT": "6000", "APPRUN_START_WORKER": "off", "APPRUN_START_TIMEOUT_S": "2.5",
               "APPRUN_STATE_DIR": str(tmp_path / "from-env")}
    config = StackConfig.from_env({"pg_port": 7000}, environ=environ)
    assert (config.pg_port, config.start_worker, config.start_timeout_s) == (7000, False, 2.5)
    assert config.state_dir == (tmp_path / "from-env").resolve() and isinstance(config.state_dir, Path)


def test_one_boolean_reader_refuses_typos() -> None:
    """The stack used to read any word it did not know as False."""
    with pytest.raises(SettingsError):
        StackConfig.from_env(environ={"APPRUN_START_WORKER": "ture"})
    with pytest.raises(SettingsError):
        Settings.from_env({"APPRUN_DATA_ALLOW_UNFILTERED_MUTATIONS": "ture"})
    for word, expected in (("Yes", True), ("1", True), ("off", False), ("FALSE", False)):
        assert StackConfig.from_env(environ={"APPRUN_START_WORKER": word}).start_worker is expected


def test_unknown_overrides_and_bad_numbers_are_errors() -> None:
    with pytest.raises(SettingsError):
        StackConfig.from_env({"pg_prot": 1}, environ={})
    with pytest.raises(SettingsError):
        StackConfig.from_env(environ={"APPRUN_PG_PORT": "54x"})
    assert Settings.from_env({"APPRUN_DATA_TABLES": "products, projects"}).data_tables == ("products", "projects")


@pytest.mark.parametrize("value", ["-1", "20", "ten"])
def test_background_nice_must_be_a_nice_value(value: str) -> None:
    with pytest.raises(SettingsError):
        StackConfig.from_env(environ={"APPRUN_BACKGROUND_NICE": value})
    assert StackConfig.from_env(environ={"APPRUN_BACKGROUND_NICE": "0"}).background_nice == 0
    assert StackConfig.from_env(environ={}).background_nice == 10


def test_fair_share_wait_must_be_positive() -> None:
    with pytest.raises(SettingsError):
        Settings.from_env({"APPRUN_FAIR_SHARE_WAIT_MS": "0"})
