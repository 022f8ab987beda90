"""Login throttling per account and per client address (issue 11): 429 with
Retry-After and doubling delays, and a bound on concurrent hash work so a
wrong-password flood cannot hold up honest logins."""
from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from collections import Counter
from urllib.parse import urlsplit

import pytest

from gateway.errors import ApiError
from tests.conftest import NO_FUNCTION_POOLING, SEED_PASSWORD
from tests.gateway_process import extra_gateway


def policy(free_failures: int = 3):
    # Imported here so the behaviour tests below also run (and fail) on code
    # that predates the throttle.
    from gateway.auth.throttle import ThrottlePolicy

    return ThrottlePolicy(free_failures, base_delay_s=1.0, max_delay_s=8.0, window_s=60.0, max_concurrent=1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(throttle, email: str, address: str) -> None:
    with throttle.attempt(email, address) as attempt:
        attempt.failed()


def retry_after(throttle, email: str, address: str) -> int | None:
    try:
        with throttle.attempt(email, address) as attempt:
            attempt.succeeded()
    except ApiError as error:
        assert error.status == 429 and error.code == "too_many_login_attempts"
        return int(error.headers["Retry-After"])
    return None


def test_delays_double_after_the_free_failures_and_are_capped() -> None:
    from gateway.auth.throttle import LoginThrottle

    clock = FakeClock()
    throttle = LoginThrottle(policy(), policy(free_failures=1000), clock=clock)
    for _ in range(2):
        fail(throttle, "Bob@Test.com", "10.0.0.1")
    assert throttle.accounts.retry_after("bob@test.com", clock.now) is None
    delays = []
    for _ in range(6):
        fail(throttle, "bob@test.com", "10.0.0.1")
        delays.append(retry_after(throttle, "BOB@test.com", "10.0.0.9"))  # any address: the account is blocked
        clock.now += delays[-1]
    assert delays == [1, 2, 4, 8, 8, 8]


def test_failures_are_forgotten_after_the_window_and_success_clears_the_account() -> None:
    from gateway.auth.throttle import LoginThrottle

    clock = FakeClock()
    throttle = LoginThrottle(policy(), policy(), clock=clock)
    for _ in range(3):
        fail(throttle, "a@x.io", "10.0.0.1")
    assert retry_after(throttle, "a@x.io", "10.0.0.2") == 1
    clock.now += policy().window_s + 1
    assert retry_after(throttle, "a@x.io", "10.0.0.2") is None  # and this success cleared the account
    fail(throttle, "a@x.io", "10.0.0.2")
    assert throttle.accounts.retry_after("a@x.io", clock.now) is None


def test_a_failing_key_may_run_one_attempt_at_a_time_a_clean_key_many() -> None:
    from gateway.auth.throttle import KeyedThrottle

    keys = KeyedThrottle(policy())
    for _ in range(5):
        keys.begin("clean")
    assert keys.retry_after("clean", 0.0) is None
    keys.begin("failing")
    keys.failed("failing", 0.0)
    assert keys.retry_after("failing", 0.0) is not None  # one in flight already
    keys.end("failing")
    assert keys.retry_after("failing", 0.0) is None


def test_an_account_is_throttled_across_addresses(app_config) -> None:
    from gateway.app import create_app

    app = create_app(dict(app_config, **NO_FUNCTION_POOLING, login_account_free_failures=3, login_delay_base_s=1.0))
    client = app.test_client()

    def login(password: str, address: str):
        return client.post("/auth/login", json={"email": "bob@test.com", "password": password},
                           environ_base={"REMOTE_ADDR": address})

    statuses = [login("wrong-password", f"10.0.0.{i}").status_code for i in range(1, 5)]
    assert statuses == [401, 401, 401, 429]
    refused = login(SEED_PASSWORD, "10.0.1.1")  # even the right password waits
    assert refused.status_code == 429 and refused.get_json()["code"] == "too_many_login_attempts"
    time.sleep(int(refused.headers["Retry-After"]))
    assert login(SEED_PASSWORD, "10.0.1.1").status_code == 200


def test_an_address_is_throttled_across_accounts(app_config) -> None:
    from gateway.app import create_app

    app = create_app(dict(app_config, **NO_FUNCTION_POOLING, login_address_free_failures=3))
    client = app.test_client()

    def login(email: str, password: str, address: str) -> int:
        return client.post("/auth/login", json={"email": email, "password": password},
                           environ_base={"REMOTE_ADDR": address}).status_code

    guesses = [login(f"user{i}@test.com", "wrong-password", "10.0.0.66") for i in range(4)]
    assert guesses == [401, 401, 401, 429]
    assert login("alice@test.com", SEED_PASSWORD, "10.0.0.66") == 429
    assert login("alice@test.com", SEED_PASSWORD, "10.0.0.67") == 200


def post_login(url: str, source: str, email: str, password: str) -> tuple[int, str | None]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30, source_address=(source, 0))
    try:
        connection.request("POST", "/auth/login", body=json.dumps({"email": email, "password": password}),
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("Retry-After")
    finally:
        connection.close()


FLOOD_DEADLINE_S = 60.0
#: Hash work the flood below can reach, whatever its request rate: the
#: address's 10 free failures plus the attackers' first concurrent waves.
MAX_ATTACKER_401S = 10 + 8 + 8


def test_a_wrong_password_flood_gets_429s_while_honest_logins_succeed(running_stack, tmp_path) -> None:
    """8 concurrent wrong-password loops from one address (the issue's
    attack) against the real server: the attacker is answered 429 with
    Retry-After, and an honest login from another address succeeds during
    the flood."""
    settings = {"login_address_free_failures": 10, "login_account_free_failures": 5}
    with extra_gateway(running_stack, tmp_path, **settings) as url:
        victim = f"victim-{uuid.uuid4().hex[:8]}@test.com"
        outcomes: Counter[int] = Counter()
        retry_after_seen: list[str] = []
        stop = threading.Event()

        def attacker() -> None:
            while not stop.is_set():
                status, retry_after = post_login(url, "127.0.0.3", victim, "wrong-password")
                outcomes[status] += 1
                if retry_after:
                    retry_after_seen.append(retry_after)

        threads = [threading.Thread(target=attacker) for _ in range(8)]
        for thread in threads:
            thread.start()
        try:
            # The flood is on once the throttle refuses more than the most
            # the attacker can ever be answered 401 (the bound asserted
            # below), instead of sleeping 1 s and hoping it was.
            deadline = time.monotonic() + FLOOD_DEADLINE_S
            while outcomes[429] <= MAX_ATTACKER_401S:
                assert time.monotonic() < deadline, f"the flood was not refused within {FLOOD_DEADLINE_S} s: {outcomes}"
                assert all(thread.is_alive() for thread in threads), "an attacker thread died"
                time.sleep(0.05)
            honest = [post_login(url, "127.0.0.4", "alice@test.com", SEED_PASSWORD)[0] for _ in range(5)]
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        assert honest == [200] * 5
        assert outcomes[429] > outcomes[401] and set(outcomes) <= {401, 429}, outcomes
        assert retry_after_seen and all(int(value) >= 1 for value in retry_after_seen)
        # Hash work reached by the attacker is bounded by the free failures
        # plus the first concurrent wave, whatever its request rate.
        assert outcomes[401] <= MAX_ATTACKER_401S, outcomes


@pytest.mark.parametrize("name", ["login_concurrent_attempts", "login_delay_base_s"])
def test_throttle_settings_are_read_and_must_be_positive(name: str) -> None:
    from gateway.settings import Settings, SettingsError

    assert getattr(Settings.from_env({f"APPRUN_{name.upper()}": "2"}), name) == 2
    with pytest.raises(SettingsError):
        Settings.from_mapping({name: 0})
