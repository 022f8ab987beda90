"""Load only goes to loopback addresses (kpi/target.py)."""
from __future__ import annotations

import pytest

from kpi.target import TargetError, loopback_error, require_loopback


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080",
                                 "https://127.0.0.2", "http://127.0.0.1"])
def test_loopback_targets_are_accepted(url: str) -> None:
    require_loopback(url)
    assert loopback_error(url) is None


@pytest.mark.parametrize("url, reason", [
    ("http://10.1.2.3:8080", "10.1.2.3"),
    ("http://0.0.0.0:8080", "0.0.0.0"),
    ("http://[2001:db8::1]:80", "2001:db8::1"),
    ("http://192.168.0.10", "loopback"),
    ("ftp://127.0.0.1", "http(s) URL"),
    ("127.0.0.1:8080", "http(s) URL"),
    ("http://no-such-host.invalid", "cannot resolve"),
])
def test_other_targets_are_refused_with_the_reason(url: str, reason: str) -> None:
    with pytest.raises(TargetError, match="loopback|resolve|http\\(s\\)") as caught:
        require_loopback(url)
    assert reason in str(caught.value)
    assert loopback_error(url) == str(caught.value)
