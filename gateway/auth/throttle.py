"""Login throttling, per account and per client address.

Two problems with unthrottled logins (issue 11): passwords can be guessed
at full speed, and eight concurrent wrong-password loops fill the Argon2
threads so that honest logins wait.  Each key (the lower-cased e-mail, and
the client address) keeps a record of its recent failures:

* after ``free_failures`` failures the key is blocked for a delay that
  doubles with every further failure (``base_delay_s`` ... ``max_delay_s``);
  a blocked key gets 429 with ``Retry-After`` and costs no hash;
* a key with any recent failure may run ``max_concurrent`` attempts at a
  time (hash work in flight); more get 429 at once.  Keys without failures
  are not bounded, so many honest logins from one address (a load test, an
  office behind NAT) are not slowed;
* failures are forgotten after ``window_s`` without one; a successful login
  clears its account's record (not its address's: an attacker with one
  valid account must not reset the address counter with it).

The state is in memory, per gateway process: with N worker processes an
address can make N times as many attempts.
"""
from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from gateway.errors import ApiError

# Records kept at most (oldest dropped first); bounds memory under a flood
# of distinct e-mail addresses.
MAX_TRACKED_KEYS = 100_000
BUSY_RETRY_AFTER_S = 1.0


@dataclass(frozen=True)
class ThrottlePolicy:
    free_failures: int
    base_delay_s: float
    max_delay_s: float
    window_s: float
    max_concurrent: int


@dataclass
class _Record:
    failures: int = 0
    last_failure: float = 0.0
    blocked_until: float = 0.0
    in_flight: int = 0


class KeyedThrottle:
    """Failure counts, blocks and in-flight attempts for one kind of key."""

    def __init__(self, policy: ThrottlePolicy, max_keys: int = MAX_TRACKED_KEYS) -> None:
        self.policy = policy
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._max_keys = max_keys

    def retry_after(self, key: str, now: float) -> float | None:
        """Seconds ``key`` must wait before its next attempt, or None."""
        record = self._records.get(key)
        if record is None:
            return None
        if record.failures and now - record.last_failure > self.policy.window_s:
            record.failures = 0
            record.blocked_until = 0.0
            if not record.in_flight:
                del self._records[key]
                return None
        if record.blocked_until > now:
            return record.blocked_until - now
        if record.failures and record.in_flight >= self.policy.max_concurrent:
            return BUSY_RETRY_AFTER_S
        return None

    def begin(self, key: str) -> None:
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = _Record()
            while len(self._records) > self._max_keys:
                self._records.popitem(last=False)
        record.in_flight += 1

    def end(self, key: str) -> None:
        record = self._records.get(key)
        if record is None:
            return
        record.in_flight = max(0, record.in_flight - 1)
        if not record.failures and not record.in_flight:
            del self._records[key]

    def failed(self, key: str, now: float) -> None:
        record = self._records.setdefault(key, _Record())
        self._records.move_to_end(key)
        record.failures += 1
        record.last_failure = now
        excess = record.failures - self.policy.free_failures
        if excess >= 0:
            delay = self.policy.base_delay_s * 2 ** min(excess, 32)
            record.blocked_until = now + min(delay, self.policy.max_delay_s)

    def clear(self, key: str) -> None:
        record = self._records.get(key)
        if record is not None:
            record.failures = 0
            record.blocked_until = 0.0


class LoginAttempt:
    """What the login route reports back: ``failed()`` or ``succeeded()``.
    An attempt that ends with neither (e.g. the database is down) is not
    counted."""

    def __init__(self) -> None:
        self.outcome: bool | None = None

    def failed(self) -> None:
        self.outcome = False

    def succeeded(self) -> None:
        self.outcome = True


def too_many_attempts(wait_s: float) -> ApiError:
    retry_after = max(1, math.ceil(wait_s))
    return ApiError(429, "too_many_login_attempts", "too many login attempts; retry later",
                    details=f"retry after {retry_after} s", headers={"Retry-After": str(retry_after)})


class LoginThrottle:
    def __init__(self, account: ThrottlePolicy, address: ThrottlePolicy,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.accounts = KeyedThrottle(account)
        self.addresses = KeyedThrottle(address)
        self._clock = clock
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def attempt(self, email: str, address: str) -> Iterator[LoginAttempt]:
        """Admit one login attempt (429 otherwise) and record its outcome."""
        account_key = email.strip().lower()
        with self._lock:
            now = self._clock()
            waits = [w for w in (self.accounts.retry_after(account_key, now),
                                 self.addresses.retry_after(address, now)) if w is not None]
            if waits:
                raise too_many_attempts(max(waits))
            self.accounts.begin(account_key)
            self.addresses.begin(address)
        attempt = LoginAttempt()
        try:
            yield attempt
        finally:
            with self._lock:
                now = self._clock()
                if attempt.outcome is False:
                    self.accounts.failed(account_key, now)
                    self.addresses.failed(address, now)
                elif attempt.outcome is True:
                    self.accounts.clear(account_key)
                self.accounts.end(account_key)
                self.addresses.end(address)
