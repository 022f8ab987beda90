"""The seed's credentials and tenants, as defaults only: the pre-flight
takes its user from Locust options (kpi/options.py), the personas are the
seed users, and every request is tagged with its persona's tenant."""
from __future__ import annotations

import os
from dataclasses import dataclass

from stack.config import StackConfig
from stack.database import SEED_USERS, TENANT_1, TENANT_2

SEED_ADMIN_EMAIL = "alice@test.com"
#: Readable tags for the seed's tenants ("Test Tenant 1" is tenant-1), as
#: thresholds name them: "http_req_duration{tenant:tenant-2}".
TENANT_TAGS = {TENANT_1: "tenant-1", TENANT_2: "tenant-2"}


@dataclass(frozen=True)
class SeedUser:
    name: str          # "alice"
    email: str
    tenant_id: str
    role: str          # "admin" or "user"

    @property
    def tenant(self) -> str:
        return tenant_tag(self.tenant_id)


#: The seed's users by first name (stack/database.py is the one source).
SEED_USERS_BY_NAME = {email.split("@")[0]: SeedUser(email.split("@")[0], email, tenant, role)
                      for email, tenant, role in SEED_USERS}


def tenant_tag(tenant_id: str) -> str:
    """The tag of a tenant: the seed's readable one, else its id."""
    return TENANT_TAGS.get(tenant_id, tenant_id)


def tenant_admin(tenant_id: str) -> SeedUser:
    """The seed's admin of a tenant (it deploys the tenant's functions)."""
    return next(u for u in SEED_USERS_BY_NAME.values() if u.tenant_id == tenant_id and u.role == "admin")


def seed_password() -> str:
    """APPRUN_SEED_PASSWORD, else the stack's default (one source: StackConfig)."""
    return os.environ.get("APPRUN_SEED_PASSWORD", StackConfig.seed_password)
