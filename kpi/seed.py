"""The seed's credentials, as defaults only: the pre-flight takes its user
from Locust options (kpi/options.py), the personas are the seed users."""
from __future__ import annotations

import os

from stack.config import StackConfig

SEED_ADMIN_EMAIL = "alice@test.com"


def seed_password() -> str:
    """APPRUN_SEED_PASSWORD, else the stack's default (one source: StackConfig)."""
    return os.environ.get("APPRUN_SEED_PASSWORD", StackConfig.seed_password)
