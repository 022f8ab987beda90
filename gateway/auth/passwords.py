"""Password hashing with Argon2id (memory-hard).

Hashing and verifying take tens of milliseconds of CPU on purpose; under
gevent they run on the hub's native thread pool so other requests go on.
"""
from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# A valid hash of a random string, verified when the e-mail is unknown so a
# login for a missing user costs as much as one for a wrong password.
_DUMMY_PASSWORD = "apprun-timing-equaliser"


class PasswordService:
    def __init__(self, time_cost: int, memory_kib: int) -> None:
        # OWASP's minimum for Argon2id: m=19 MiB, t=2, p=1.
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)
        self._dummy_hash = self._hasher.hash(_DUMMY_PASSWORD)

    def hash(self, password: str) -> str:
        return _offload(self._hasher.hash, password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        target = password_hash or self._dummy_hash
        try:
            ok = _offload(self._hasher.verify, target, password)
        except (VerificationError, InvalidHashError):
            return False
        return bool(ok) and password_hash is not None


def _offload(fn, *args):
    """Run CPU-heavy native code off the gevent hub when gevent is active."""
    try:
        from gevent import get_hub
        from gevent.monkey import is_module_patched
    except ImportError:  # pragma: no cover - gevent is a dependency
        return fn(*args)
    if not is_module_patched("socket"):
        return fn(*args)
    return get_hub().threadpool.apply(fn, args)
