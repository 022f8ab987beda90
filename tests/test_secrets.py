"""Local secrets are private (issue 11): the state directory is 0700 (0710
for PostgreSQL's own group when run as root), stack.json, secrets.json and
private keys 0600, also when they existed with wider modes."""
from __future__ import annotations

import grp
import json
import os
import stat
from pathlib import Path

from stack import stack
from tests.conftest import stack_config


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_running_stacks_state_is_private(running_stack) -> None:
    config, _ = running_stack
    state_dir = config.state_dir
    if os.geteuid() == 0:  # PostgreSQL runs as apprun-pg and must reach pgdata
        assert mode(state_dir) == 0o710
        assert grp.getgrgid(state_dir.stat().st_gid).gr_name == "apprun-pg"
    else:
        assert mode(state_dir) == 0o700
    assert mode(state_dir / "stack.json") == 0o600
    assert mode(state_dir / "secrets.json") == 0o600
    assert "apprun_gateway" in json.loads((state_dir / "stack.json").read_text())["database_url"]


def test_existing_wide_modes_are_tightened(tmp_path) -> None:
    config = stack_config(tmp_path / "state", database_url="postgresql://owner:pw@127.0.0.1:1/none")
    config.state_dir.mkdir(mode=0o755)
    config.state_dir.chmod(0o755)
    for name in ("stack.json", "secrets.json"):
        (config.state_dir / name).write_text("{}")
        (config.state_dir / name).chmod(0o644)
    stack.down(config, log=lambda message: None)
    assert mode(config.state_dir) == 0o700
    assert mode(config.state_dir / "stack.json") == 0o600
    assert mode(config.state_dir / "secrets.json") == 0o600


def test_new_secrets_are_created_private(tmp_path) -> None:
    config = stack_config(tmp_path / "state", database_url="postgresql://owner:pw@127.0.0.1:1/none")
    old_umask = os.umask(0o022)
    try:
        keys = stack.load_secrets(config)
    finally:
        os.umask(old_umask)
    assert mode(config.state_dir / "secrets.json") == 0o600 and len(keys["jwt_secret"]) >= 32


def test_jwt_private_keys_are_0600(app_config, tmp_path) -> None:
    from gateway.auth.tokens import TokenService
    from gateway.settings import Settings

    created = tmp_path / "new-key.pem"
    TokenService(Settings.from_mapping({"jwt_algorithm": "EdDSA", "jwt_private_key_file": str(created)}))
    assert mode(created) == 0o600
    existing = tmp_path / "existing-key.pem"
    existing.write_bytes(created.read_bytes())
    existing.chmod(0o644)
    TokenService(Settings.from_mapping({"jwt_algorithm": "EdDSA", "jwt_private_key_file": str(existing)}))
    assert mode(existing) == 0o600
