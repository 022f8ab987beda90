"""The load target must be on this machine's loopback interface.

The suite generates hundreds of requests per second; pointed at a shared
host by mistake it is a denial of service.  Every address the host name
resolves to must be loopback (127.0.0.0/8 or ::1), checked before any load.
"""
from __future__ import annotations

import functools
import ipaddress
import socket
from urllib.parse import urlsplit


class TargetError(ValueError):
    pass


def require_loopback(url: str) -> None:
    """Raise TargetError unless ``url`` is http(s) on a loopback address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetError(f"--host {url!r} is not an http(s) URL such as http://127.0.0.1:8080")
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 80, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise TargetError(f"--host {url!r}: cannot resolve {parts.hostname!r} ({exc})") from None
    addresses = {info[4][0] for info in infos}
    foreign = sorted(a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback)
    if foreign:
        raise TargetError(f"--host {url!r} resolves to {', '.join(foreign)}: load is only sent to loopback "
                          "addresses (127.0.0.1, ::1)")


@functools.lru_cache(maxsize=64)
def loopback_error(url: str) -> str | None:
    """The reason ``url`` is refused, or None; cached so that every simulated
    user can check its own host without a DNS lookup each time."""
    try:
        require_loopback(url)
    except TargetError as exc:
        return str(exc)
    return None
