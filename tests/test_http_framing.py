"""HTTP hygiene of the real gateway process, over raw sockets (issue 11):
ambiguous framing is refused and the connection closed, chunked bodies
over the limit get 413, oversized headers get the JSON error shape, HEAD
answers like GET without a body, idle and slow connections time out."""
from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

from tests.conftest import auth
from tests.gateway_process import extra_gateway

SHAPE = {"code", "message", "details", "hint"}
SMUGGLED = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
READ_DEADLINE_S = 30.0


def connect(url: str, timeout: float = 5.0) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=timeout)


def read_until_closed(sock: socket.socket, limit_s: float = READ_DEADLINE_S,
                      until: Callable[[bytes], bool] | None = None) -> tuple[bytes, bool]:
    """Everything the server sends until it closes, ``until(received)`` holds
    or ``limit_s`` passes (a generous deadline: the answers and closes waited
    for come in milliseconds, so only a broken server reaches it); and
    whether it closed."""
    received = b""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if until is not None and until(received):
            return received, False
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return received, False
        except ConnectionResetError:
            return received, True
        if not data:
            return received, True
        received += data
    return received, False


def exchange(url: str, raw: bytes, until: Callable[[bytes], bool] | None = None) -> tuple[bytes, bool]:
    with connect(url) as sock:
        try:
            sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_until_closed(sock, until=until)


def responses(count: int) -> Callable[[bytes], bool]:
    """``until`` for a keep-alive connection, which the server leaves open:
    ``count`` responses arrived, the last one with its whole body."""

    def arrived(stream: bytes) -> bool:
        if len(statuses(stream)) < count:
            return False
        head, separator, body = stream[stream.rindex(b"HTTP/1.1 "):].partition(b"\r\n\r\n")
        lengths = [int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")]
        return bool(separator) and len(body) >= (lengths[0] if lengths else 0)

    return arrived


def statuses(stream: bytes) -> list[int]:
    """Status codes of the responses in a byte stream (bodies here are JSON,
    which cannot contain a status line)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", stream)]


def first_json_body(stream: bytes) -> dict:
    head, _, rest = stream.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return json.loads(rest[:length])


def post_login(headers: bytes, body: bytes) -> bytes:
    return (b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + headers + b"\r\n"
            + body)


@pytest.mark.parametrize("headers, body", [
    (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
    (b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"),
    (b"Content-Length: 0\r\nContent-Length: 36\r\n", b""),
    (b"Content-Length: 0, 36\r\n", b""),
    (b"Transfer-Encoding: xchunked\r\n", b""),
    (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", b"0\r\n\r\n"),
    (b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"),
    (b"Content-Length: +0\r\n", b""),
    (b"Content-Length : 0\r\n", b""),
    (b"X-Folded: a\r\n Content-Length: 0\r\n", b""),
], ids=["cl-then-te", "te-then-cl", "two-cl", "cl-list", "xchunked", "two-te", "te-list", "cl-sign",
        "space-before-colon", "obs-fold"])
def test_ambiguous_framing_is_refused_and_closed(gateway_url, headers: bytes, body: bytes) -> None:
    stream, closed = exchange(gateway_url, post_login(headers, body) + SMUGGLED)
    assert statuses(stream) == [400], stream[:300]
    assert first_json_body(stream).keys() == SHAPE
    assert closed, "the connection must close: the rest of the stream is not a request"


def test_chunked_body_over_the_limit_is_413(gateway_url) -> None:
    limit = 1024 * 1024  # the session gateway's APPRUN_MAX_BODY_BYTES
    payload = b'{"email":"' + b"a" * limit + b'","password":"whatever-pass"}'
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part)
                       for part in (payload[i:i + 65536] for i in range(0, len(payload), 65536)))
    stream, closed = exchange(gateway_url, post_login(b"Transfer-Encoding: chunked\r\n", chunked + b"0\r\n\r\n"))
    assert statuses(stream) == [413], stream[:300]
    assert first_json_body(stream).keys() == SHAPE
    assert closed


def test_a_large_unread_body_closes_the_connection_and_says_so(gateway_url) -> None:
    """A 401 before the body is read: the body is not drained (it could be
    endless), and the response says Connection: close."""
    body = b"{" + b" " * 200_000 + b"}"
    request = (b"POST /data/products HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body)) + body
    stream, closed = exchange(gateway_url, request + SMUGGLED)
    assert statuses(stream) == [401] and closed, stream[:300]
    assert b"connection: close" in stream.partition(b"\r\n\r\n")[0].lower()


def test_chunked_body_under_the_limit_still_works(gateway_url) -> None:
    payload = b'{"email":"bob@test.com","password":"wrong-password"}'
    request = post_login(b"Transfer-Encoding: chunked\r\n", b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload))
    stream, _ = exchange(gateway_url, request + SMUGGLED, until=responses(2))
    assert statuses(stream) == [401, 200], stream[:300]


def test_malformed_chunks_are_a_client_error(gateway_url) -> None:
    stream, closed = exchange(gateway_url, post_login(b"Transfer-Encoding: chunked\r\n", b"zz\r\n{}\r\n0\r\n\r\n"))
    assert statuses(stream) == [400] and closed, stream[:300]


@pytest.mark.parametrize("headers", [b"X-Big: " + b"a" * 70_000 + b"\r\n",
                                     b"".join(b"X-%d: y\r\n" % i for i in range(150))],
                         ids=["70KB-header", "150-headers"])
def test_oversized_headers_get_the_json_error_shape(gateway_url, headers: bytes) -> None:
    stream, closed = exchange(gateway_url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert statuses(stream) == [431], stream[:300]
    assert first_json_body(stream).keys() == SHAPE
    assert closed


def test_overlong_request_line_gets_the_json_error_shape(gateway_url) -> None:
    stream, closed = exchange(gateway_url, b"GET /healthz?" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert statuses(stream) == [414], stream[:300]
    assert first_json_body(stream).keys() == SHAPE
    assert closed


def test_head_answers_like_get_without_a_body(gateway_url, tokens) -> None:
    token = auth(tokens["bob"])["Authorization"].encode()
    head = b"HEAD /data/products HTTP/1.1\r\nHost: x\r\nAuthorization: " + token + b"\r\n\r\n"
    with connect(gateway_url) as sock:
        sock.sendall(head + SMUGGLED)
        stream, _ = read_until_closed(sock, until=responses(2))
    # The HEAD answer's headers are followed directly by the next response.
    assert statuses(stream) == [200, 200], stream[:500]
    head_response, _, rest = stream.partition(b"\r\n\r\n")
    assert b"application/json" in head_response.lower()
    assert rest.startswith(b"HTTP/1.1 200")


def test_idle_and_slow_connections_time_out(running_stack, tmp_path) -> None:
    with extra_gateway(running_stack, tmp_path, http_idle_timeout_s=1, http_header_timeout_s=1.5) as url:
        # A connection that never sends a byte is closed after the idle timeout.
        with connect(url) as sock:
            stream, closed = read_until_closed(sock)
            assert closed and stream == b""
        # Headers trickled slower than the deadline: 408 in the JSON shape.
        with connect(url) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            received = b""
            started = time.monotonic()
            while not received and time.monotonic() - started < READ_DEADLINE_S:
                sock.sendall(b"X: y\r\n")  # each line well within the idle timeout
                sock.settimeout(0.3)
                try:
                    received = sock.recv(65536)
                except TimeoutError:
                    pass
            rest, closed = read_until_closed(sock)  # the server lingers up to 2 s
            stream = received + rest
            assert statuses(stream) == [408] and first_json_body(stream).keys() == SHAPE, stream[:300]
            assert closed
        # A keep-alive connection is closed once idle.
        with connect(url) as sock:
            sock.sendall(SMUGGLED)
            stream, closed = read_until_closed(sock)
            assert statuses(stream) == [200] and closed
