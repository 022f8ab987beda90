"""The seed's three personas, checking correctness under load.

alice (tenant 1, admin), bob (tenant 1, user), charlie (tenant 2, admin).
Every correctness violation fails its request *and* increments a named
counter the KPI gate judges: isolation_violations, rbac_violations,
lost_writes, workflow_failures.  Every request carries its persona's tenant
tag (kpi/seed.py) for the gate's per-tenant figures.  In the noisy profile
the bursting tenant's 429s are expected: counted (noisy_429), not failed.
"""
from __future__ import annotations

import functools
import logging
import random
import time
import uuid

from locust import FastHttpUser, events, task
from locust.exception import StopUser

from kpi.hooks import after_load, record_dropped, record_violation
from kpi.pacing import DUE_AT, PER_USER_RPS, OpenSchedule
from kpi.seed import SEED_USERS_BY_NAME, TENANT_1, TENANT_2, seed_password, tenant_tag
from kpi.target import loopback_error
from kpi.tenants import TENANT_CONTEXT_KEY
from locustfiles import storage_tasks
from locustfiles.refusals import ExpectedRefusals, over_budget
from wasm.samples import PRICE_INPUT, PRICE_OUTPUT

SEED_PASSWORD = seed_password()
FUNCTION_NAME = "loadtest-price"
WORKFLOW_DEADLINE_S = 60.0
# Each alice starts at most one workflow per interval: with the kpi profile's
# ~38 alices that is ~1.3 workflows/s, a small share of the load as DESIGN.md
# asks.  One workflow costs ~100 ms of CPU across the Temporal dev server and
# the worker (measured: 6.4 workflows/s kept them at 65 % of a core).
WORKFLOW_INTERVAL_S = 30.0
# Each admin redeploys its own function at most once a minute (~1 deploy/s
# across the kpi profile's ~63 admins): deploys are rare next to invocations.
DEPLOY_INTERVAL_S = 60.0
DEPLOY_FUNCTION_NAME = "loadtest-deploy"


@functools.lru_cache(maxsize=1)
def _price_module() -> bytes:
    from wasm.build import example_wasm

    return example_wasm("price_tax")


def _expect_forbidden(response, what: str, counter: str) -> None:
    """A refused request is the correct outcome; anything else is a violation
    (a 429 is a failure but no violation: the request was not executed)."""
    if response.status_code == 403:
        response.success()
    elif not over_budget(response, what):
        response.failure(f"{what} answered {response.status_code}, expected 403")
        record_violation(counter)


# A user's login waits out the login throttle's 429 (Retry-After, capped)
# at most this many times.
LOGIN_ATTEMPTS = 5
LOGIN_MAX_WAIT_S = 5.0


def is_noisy_tenant(environment, tenant_id: str) -> bool:  # type: ignore[no-untyped-def]
    """True for every user of the tenant that bursts in the noisy profile."""
    options = getattr(environment, "parsed_options", None)
    return (getattr(options, "load_profile", "") == "noisy"
            and SEED_USERS_BY_NAME[options.noisy_user].tenant_id == tenant_id)


class TenantUser(FastHttpUser):
    """Every task sends exactly one request (a task with nothing to do falls
    back to a list read), so users x PER_USER_RPS is the arrival rate the
    kpi profile holds.  Requests go out on a fixed schedule (kpi/pacing.py):
    a user late after a slow response catches up instead of sending less,
    and each request's latency counts from when it was due."""
    abstract = True
    email = ""
    tenant_id = ""
    other_tenant = ""
    connection_timeout = 10.0
    network_timeout = 10.0
    # Each task sends one request and returns with its answer (a closed loop
    # per user, kept on schedule by catching up); see locustfiles/arrival.py.
    waits_for_answers = True

    def on_start(self) -> None:
        if loopback_error(self.host or ""):  # never send load off this machine (kpi/target.py)
            raise StopUser()
        if is_noisy_tenant(self.environment, self.tenant_id):
            self.client.request_event = ExpectedRefusals(self.client.request_event)
        token = self._login()
        self.headers = {"Authorization": f"Bearer {token}"}
        self.next_due: dict[str, float] = {}
        self.schedule = OpenSchedule(PER_USER_RPS, time.time())

    def _login(self) -> str:
        """Log in as a client should: a 429 from the login throttle (the
        account or this address failed recently, so logins run one at a
        time) is waited out for its Retry-After, a few times, before the
        user gives up."""
        for attempt in range(1, LOGIN_ATTEMPTS + 1):
            with self.client.post("/auth/login", json={"email": self.email, "password": SEED_PASSWORD},
                                  name="/auth/login", catch_response=True) as response:
                if response.status_code == 200:
                    return response.json()["access_token"]
                if response.status_code == 429 and attempt < LOGIN_ATTEMPTS:
                    response.success()   # the throttle's answer, handled by waiting
                    retry_after = float(response.headers.get("Retry-After") or 1)
                else:
                    response.failure(f"login failed: {response.status_code}")
                    raise RuntimeError(f"{self.email} cannot log in")
            time.sleep(min(retry_after, LOGIN_MAX_WAIT_S))
        raise AssertionError("unreachable")

    def wait_time(self) -> float:
        return self.schedule.next_wait(time.time())

    def context(self) -> dict:
        """Each request's tenant tag, and its due time for http_req_latency
        (none before the schedule starts: the login)."""
        schedule = getattr(self, "schedule", None)
        tenant = {TENANT_CONTEXT_KEY: tenant_tag(self.tenant_id)}
        return {**tenant, DUE_AT: schedule.current_due} if schedule is not None else tenant

    def on_stop(self) -> None:
        schedule = getattr(self, "schedule", None)
        if schedule is not None:
            record_dropped(schedule.dropped(time.time(), self.waits_for_answers))

    def _due(self, what: str, interval_s: float) -> bool:
        """True at most once per interval; the first time falls at a random
        point of the first interval so users do not act in step."""
        now = time.monotonic()
        due_at = self.next_due.setdefault(what, now + random.uniform(0, interval_s))
        if now < due_at:
            return False
        self.next_due[what] = now + interval_s
        return True

    # -- reads -----------------------------------------------------------
    def _check_rows(self, response, label: str) -> list:
        if response.status_code not in (200, 206):
            response.failure(f"{label}: HTTP {response.status_code}")
            return []
        rows = response.json()
        foreign = [row for row in rows if row.get("tenant_id") not in (None, self.tenant_id)]
        if foreign:
            response.failure(f"{label}: {len(foreign)} row(s) of another tenant")
            record_violation("isolation_violations")
        return rows

    @task(10)
    def list_products(self) -> None:
        offset = random.randint(0, 20)
        url = ("/data/products?select=id,tenant_id,name,price&price=gte.0&order=created_at.desc"
               f"&limit=10&offset={offset}")
        with self.client.get(url, headers=self.headers, name="/data/products [list]", catch_response=True) as r:
            self._check_rows(r, "list")

    @task(3)
    def filtered_products(self) -> None:
        url = "/data/products?select=id,tenant_id,price&or=(price.lt.50,price.gt.150)&limit=20"
        with self.client.get(url, headers={**self.headers, "Prefer": "count=exact"},
                             name="/data/products [filter+count]", catch_response=True) as r:
            self._check_rows(r, "filter")

    @task(2)
    def cross_tenant_probe(self) -> None:
        url = f"/data/products?tenant_id=eq.{self.other_tenant}&select=id,tenant_id"
        with self.client.get(url, headers=self.headers, name="/data/products [cross-tenant probe]",
                             catch_response=True) as r:
            if self._check_rows(r, "probe"):
                r.failure("cross-tenant probe returned rows")

    @task(3)
    def invoke_function(self) -> None:
        with self.client.post(f"/functions/{FUNCTION_NAME}/invoke", json=PRICE_INPUT, headers=self.headers,
                              name="/functions/[name]/invoke", catch_response=True) as r:
            if r.status_code != 200 or r.json() != PRICE_OUTPUT:
                r.failure(f"function: HTTP {r.status_code}")


class AdminUser(TenantUser):
    abstract = True
    tasks = storage_tasks.ADMIN_TASKS   # merged with the @task methods below

    def on_start(self) -> None:
        super().on_start()
        self.unverified: list[tuple[str, str]] = []   # (id, name) created, not yet read back

    @task(2)
    def create_product(self) -> None:
        name = f"lt-{uuid.uuid4().hex[:12]}"
        with self.client.post("/data/products", json={"name": name, "price": random.randint(1, 300)},
                              headers={**self.headers, "Prefer": "return=representation"},
                              name="/data/products [create]", catch_response=True) as r:
            if r.status_code != 201:
                r.failure(f"create: HTTP {r.status_code}")
                return
            self.unverified.append((r.json()[0]["id"], name))

    @task(2)
    def read_back(self) -> None:
        """A created row must be readable afterwards (by its id, one task later)."""
        if not self.unverified:
            return self.list_products()
        row_id, name = self.unverified.pop(0)
        with self.client.get(f"/data/products?id=eq.{row_id}&select=id,tenant_id,name", headers=self.headers,
                             name="/data/products [read back]", catch_response=True) as r:
            if over_budget(r, "read back"):
                self.unverified.insert(0, (row_id, name))     # read it back later
                return
            rows = self._check_rows(r, "read back")
            if r.status_code == 200 and [row["name"] for row in rows] != [name]:
                r.failure("a created row is not readable")
                record_violation("lost_writes")

    @task(1)
    def deploy_function(self) -> None:
        """The rare deploy: an admin replaces its tenant's second function."""
        if not self._due("deploy", DEPLOY_INTERVAL_S):
            return self.invoke_function()
        with self.client.put(f"/functions/{DEPLOY_FUNCTION_NAME}", data=_price_module(),
                             headers={**self.headers, "Content-Type": "application/wasm"},
                             name="/functions/[name] [deploy]", catch_response=True) as r:
            if r.status_code not in (200, 201):
                r.failure(f"deploy: HTTP {r.status_code}")

    @task(1)
    def update_product(self) -> None:
        with self.client.patch("/data/products?name=like.lt-*&price=lt.5", json={"price": 5},
                               headers=self.headers, name="/data/products [update]", catch_response=True) as r:
            if r.status_code != 204:
                r.failure(f"update: HTTP {r.status_code}")

    @task(1)
    def cross_tenant_write(self) -> None:
        with self.client.post("/data/products", json={"name": "smuggled", "price": 1, "tenant_id": self.other_tenant},
                              headers=self.headers, name="/data/products [cross-tenant write]",
                              catch_response=True) as r:
            _expect_forbidden(r, "cross-tenant insert", "isolation_violations")


class Alice(AdminUser):
    """Tenant 1 admin: reads, writes, functions and the rare workflow."""
    weight = 3
    email, tenant_id, other_tenant = "alice@test.com", TENANT_1, TENANT_2

    def on_start(self) -> None:
        super().on_start()
        self.pending: list[tuple[str, float]] = []

    @task(1)
    def run_workflow(self) -> None:
        if len(self.pending) >= 3 or not self._due("workflow", WORKFLOW_INTERVAL_S):
            # Not due: still send one request so the arrival rate holds.
            return self.poll_workflow()
        body = {"workflow": "user_registration", "input": {"email": f"lt-{uuid.uuid4().hex[:10]}@test.com"}}
        with self.client.post("/api/v1/workflows/execute", json=body, headers=self.headers,
                              name="/api/v1/workflows/execute", catch_response=True) as r:
            if over_budget(r, "workflow start"):
                return
            if r.status_code != 202:
                r.failure(f"workflow start: HTTP {r.status_code}")
                record_violation("workflow_failures")
                return
            self.pending.append((r.json()["workflow_id"], time.monotonic()))

    @task(2)
    def poll_workflow(self) -> None:
        if not self.pending:
            return self.list_products()
        workflow_id, started = self.pending[0]
        with self.client.get(f"/api/v1/workflows/{workflow_id}", headers=self.headers,
                             name="/api/v1/workflows/[id]", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"workflow status: HTTP {r.status_code}")
                return
            status = r.json()["status"]
            if status == "completed":
                self.pending.pop(0)
            elif status == "failed" or time.monotonic() - started > WORKFLOW_DEADLINE_S:
                self.pending.pop(0)
                r.failure(f"workflow {status}")
                record_violation("workflow_failures")


class Bob(TenantUser):
    """Tenant 1 user: reads and invokes; every write attempt must be refused."""
    weight = 3
    email, tenant_id, other_tenant = "bob@test.com", TENANT_1, TENANT_2
    tasks = storage_tasks.USER_TASKS     # merged with the @task methods below

    @task(2)
    def forbidden_write(self) -> None:
        method, url, name = random.choice([
            ("POST", "/data/products", "/data/products [bob create]"),
            ("PATCH", "/data/products?name=eq.Product%20A", "/data/products [bob update]"),
            ("DELETE", "/data/products?name=eq.Product%20A", "/data/products [bob delete]"),
            ("PUT", f"/functions/{FUNCTION_NAME}", "/functions/[name] [bob deploy]"),
        ])
        with self.client.request(method, url, json={"name": "bob", "price": 1}, headers=self.headers, name=name,
                                 catch_response=True) as r:
            _expect_forbidden(r, f"bob's {method}", "rbac_violations")


class Charlie(AdminUser):
    """Tenant 2 admin."""
    weight = 2
    email, tenant_id, other_tenant = "charlie@test.com", TENANT_2, TENANT_1


ADMIN_EMAILS = ("alice@test.com", "charlie@test.com")


def login_token(host: str, email: str) -> str:
    """A seed user's access token, outside the simulated users (set-up,
    pre-flight, cleanup)."""
    import requests

    response = requests.post(f"{host}/auth/login", json={"email": email, "password": SEED_PASSWORD}, timeout=30)
    response.raise_for_status()
    return response.json()["access_token"]


def _admin_sessions(environment):
    """(email, headers) for each tenant's admin, on the master or the local
    runner only (workers share the target, so once is enough); [] on workers."""
    from locust.runners import WorkerRunner

    if isinstance(environment.runner, WorkerRunner) or loopback_error(environment.host or ""):
        return []
    return [(email, {"Authorization": f"Bearer {login_token(environment.host, email)}"}) for email in ADMIN_EMAILS]


@events.test_start.add_listener
def _deploy_load_function(environment, **_kwargs) -> None:
    """The function the personas invoke, deployed once per tenant before load."""
    import requests

    for _email, headers in _admin_sessions(environment):
        requests.put(f"{environment.host}/functions/{FUNCTION_NAME}", data=_price_module(), timeout=30,
                     headers={**headers, "Content-Type": "application/wasm"}).raise_for_status()


@after_load
def _delete_load_rows(environment) -> None:
    """Remove the products the personas created (names start with ``lt-``),
    so repeated runs measure the same database instead of a growing one."""
    import requests

    try:
        for email, headers in _admin_sessions(environment):
            response = requests.delete(f"{environment.host}/data/products?name=like.lt-*", headers=headers, timeout=60)
            if response.status_code >= 400:
                logging.getLogger("apprun.personas").warning("cleanup for %s: HTTP %s", email,
                                                             response.status_code)
    except requests.RequestException as exc:  # the verdict matters more than the cleanup
        logging.getLogger("apprun.personas").warning("cleanup skipped: %s", exc)
