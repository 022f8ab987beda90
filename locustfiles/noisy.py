"""The noisy profile's burst (``--load-profile noisy``, kpi/shapes.py): extra
users of one tenant (``--noisy-user``, charlie by default) that do what the
issue's noisy neighbour did, within what its role allows:

* every role: spinning WASM calls (the ``bad_infinite_loop`` example deployed
  with the highest fuel and the 2 s time ceiling, as the issue's recipe), and
  list reads;
* admins: slow workflows (``project_delay_ms`` 8 s), one per user every
  SLOW_WORKFLOW_INTERVAL_S.

The burst users share one session per seed user (one login, as one client
application would): 30 logins at once would be a burst of Argon2 work of
their own, on every core, that no tenant budget covers (logins carry no
tenant until they succeed).  The spin ends out of fuel (422) or out of time
(504): both are its expected ends.  A 429 is expected for this tenant (personas.ExpectedRefusals): the
gate counts it in noisy_429, not as a failure.
"""
from __future__ import annotations

import logging
import uuid

from gevent.lock import Semaphore
from locust import events

from kpi.seed import SEED_USERS_BY_NAME, tenant_admin
from locustfiles.arrival import ArrivalRateSends, sent_without_waiting
from locustfiles.personas import TENANT_1, TENANT_2, TenantUser, login_token

SPIN_FUNCTION = "loadtest-spin"
SPIN_LIMITS = "fuel=1000000000&timeout_ms=2000"
SPIN_ENDS = (422, 504)            # function_out_of_fuel, function_timeout
SLOW_WORKFLOW_DELAY_MS = 8000
SLOW_WORKFLOW_INTERVAL_S = 2.0
log = logging.getLogger("apprun.noisy")
# email -> the burst's shared access token (cleared when a run starts)
_sessions: dict[str, str] = {}
_login_lock = Semaphore()


class NoisyNeighbour(ArrivalRateSends, TenantUser):
    """One burst user of the noisy tenant; who it is comes from --noisy-user.
    It sends on its schedule whatever its answers take (locustfiles/arrival.py):
    the burst is the rate asked, not what the gateway's waits let through."""
    weight = 1
    # kpi.shapes.BURST_CLASS_MARK: spawned by the noisy profile's burst only
    # (the shape names the classes of each tick).
    apprun_burst = True

    def on_start(self) -> None:
        user = SEED_USERS_BY_NAME[self.environment.parsed_options.noisy_user]
        self.email, self.tenant_id, self.role = user.email, user.tenant_id, user.role
        self.other_tenant = TENANT_2 if user.tenant_id == TENANT_1 else TENANT_1
        super().on_start()

    def _login(self) -> str:
        with _login_lock:      # the first burst user logs in; the others wait for its token
            if self.email not in _sessions:
                _sessions[self.email] = super()._login()
            return _sessions[self.email]

    def spin(self) -> None:
        with self.client.post(f"/functions/{SPIN_FUNCTION}/invoke", json={"export": "spin", "args": []},
                              headers=self.headers, name="/functions/[name]/invoke [spin]",
                              catch_response=True) as r:
            if r.status_code in SPIN_ENDS:
                r.success()
            elif r.status_code != 429:
                r.failure(f"spin: HTTP {r.status_code}")

    def slow_workflow(self) -> None:
        if self.role != "admin" or not self._due("slow-workflow", SLOW_WORKFLOW_INTERVAL_S):
            return self.spin()
        body = {"workflow": "user_registration", "input": {"email": f"lt-noisy-{uuid.uuid4().hex[:10]}@test.com",
                                                            "project_delay_ms": SLOW_WORKFLOW_DELAY_MS}}
        with self.client.post("/api/v1/workflows/execute", json=body, headers=self.headers,
                              name="/api/v1/workflows/execute [slow]", catch_response=True) as r:
            if r.status_code not in (202, 429):
                r.failure(f"slow workflow start: HTTP {r.status_code}")


# The burst's own mix replaces the steady tasks it would inherit: about half
# the sends spin, a sixth start slow workflows (or spin), a third read.
NoisyNeighbour.tasks = [sent_without_waiting(action) for action in
                        [NoisyNeighbour.spin] * 3 + [NoisyNeighbour.slow_workflow] + [TenantUser.list_products] * 2]


@events.test_start.add_listener
def _deploy_spin_function(environment, **_kwargs) -> None:  # type: ignore[no-untyped-def]
    """The noisy tenant's spinning function, deployed by its admin before the load."""
    import requests
    from locust.runners import WorkerRunner

    options = environment.parsed_options
    _sessions.clear()
    if options is None or options.load_profile != "noisy" or isinstance(environment.runner, WorkerRunner):
        return
    admin = tenant_admin(SEED_USERS_BY_NAME[options.noisy_user].tenant_id)
    token = login_token(environment.host, admin.email)
    from wasm.build import example_wasm

    response = requests.put(f"{environment.host}/functions/{SPIN_FUNCTION}?{SPIN_LIMITS}",
                            data=example_wasm("bad_infinite_loop"), timeout=30,
                            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/wasm"})
    response.raise_for_status()
    log.info("noisy: %s deployed %s for %s", admin.name, SPIN_FUNCTION, admin.tenant)
