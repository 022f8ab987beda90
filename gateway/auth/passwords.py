"""Password hashing with Argon2id (memory-hard).

Hashing and verifying take tens of milliseconds of CPU on purpose; under
gevent they run on a small pool of native threads so other requests go on.
The pool is small because argon2 allocates its whole memory cost (19 MiB by
default) per call: a login burst on the hub's 10-thread pool grew the
gateway by 130 MB of retained malloc arenas (measured: 100 logins).
"""
from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from gateway.native import NativePool

# A valid hash of a random string, verified when the e-mail is unknown so a
# login for a missing user costs as much as one for a wrong password.
_DUMMY_PASSWORD = "apprun-timing-equaliser"


class PasswordService:
    def __init__(self, time_cost: int, memory_kib: int, threads: int) -> None:
        # OWASP's minimum for Argon2id: m=19 MiB, t=2, p=1.
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)
        self._dummy_hash = self._hasher.hash(_DUMMY_PASSWORD)
        self._pool = NativePool(threads)

    def hash(self, password: str) -> str:
        return self._pool.apply(self._hasher.hash, password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        target = password_hash or self._dummy_hash
        ok = self._pool.apply(self._verify_in_thread, target, password)
        return ok and password_hash is not None

    def _verify_in_thread(self, password_hash: str, password: str) -> bool:
        # A mismatch must not leave the pool as an exception: gevent's
        # thread pool logs a full traceback for each one (a traceback per
        # wrong password, issue 11).
        try:
            return bool(self._hasher.verify(password_hash, password))
        except (VerificationError, InvalidHashError):
            return False
