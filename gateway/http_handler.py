"""A stricter gevent pywsgi handler: unambiguous framing, deadlines, limits.

pywsgi alone lets a request with both ``Content-Length`` and
``Transfer-Encoding: chunked``, two ``Content-Length`` headers, or
``Transfer-Encoding: xchunked`` through, and the body then parses as a
second request (request smuggling behind any proxy that reads the framing
differently).  It also waits forever for idle or half-sent requests, cuts
chunked bodies at the body limit instead of refusing them, and answers an
oversized header with an empty 400.  This handler:

* refuses ambiguous framing with a JSON 400 and closes the connection:
  Content-Length with Transfer-Encoding, more than one Content-Length, a
  Content-Length that is not plain ASCII digits, any Transfer-Encoding but
  a single ``chunked``, obsolete line folding, malformed header names;
* reads the header block under a size limit (JSON 431) and, from the
  request's first byte, a deadline (JSON 408);
* closes a connection idle, or stalled in a read or write, longer than the
  idle timeout (a socket timeout);
* bounds chunked bodies (the app answers 413, see ``gateway/edge.py``) and
  never drains a large unread body: that response says ``Connection:
  close`` and the connection is closed.

Import this module only after gevent's monkey-patching.
"""
from __future__ import annotations

import json
import logging
import re
import socket
import time
from http import client
from typing import Any

import gevent
from gevent.pywsgi import MAX_REQUEST_LINE, Input, OldMessage, WSGIHandler
from werkzeug.exceptions import RequestEntityTooLarge

from gateway.errors import ApiError
from gateway.settings import Settings
from gateway.storage.uploads import MULTIPART_SLACK_BYTES

# Route families whose bodies are not JSON and have a limit of their own:
# the connection-level cap is that limit there (the route then applies the
# exact one, e.g. a bucket's file_size_limit), max_body_bytes elsewhere.
STORAGE_PREFIX = "/storage/v1/"
FUNCTIONS_PREFIX = "/functions/"


def body_limit(settings: Settings, path: str) -> int:
    """The most bytes any route under ``path`` accepts in one request body."""
    if path.startswith(STORAGE_PREFIX):
        return max(settings.max_body_bytes, settings.storage_max_object_bytes + MULTIPART_SLACK_BYTES)
    if path.startswith(FUNCTIONS_PREFIX):
        return max(settings.max_body_bytes, settings.function_max_module_bytes)
    return settings.max_body_bytes

log = logging.getLogger("gateway.http")

# A request body the app did not read is drained (to keep the connection
# alive) only when this small; otherwise the connection is closed.
DRAIN_LIMIT_BYTES = 64 * 1024
MAX_HEADER_LINES = 100  # http.client's limit, which pywsgi relied on
# After refusing a request, read (and drop) what the client is still
# sending for this long before closing: closing with unread input sends a
# TCP reset, which can destroy the error response before the client reads it.
LINGER_S = 2.0
LINGER_MAX_BYTES = 4 * 1024 * 1024
_HEADER_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:")
_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")
_REASONS = {400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large", 414: "URI Too Long",
            431: "Request Header Fields Too Large"}


class RequestRejected(ValueError):
    """A request refused before the app runs.  A ValueError, so pywsgi's
    ``handle_one_request`` routes it to ``_handle_client_error`` and closes
    the connection."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_bytes(status: int, code: str, message: str) -> bytes:
    """A whole HTTP response in the gateway's JSON error shape."""
    body = json.dumps(ApiError(status, code, message).body()).encode()
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            "Content-Type: application/json\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


def read_header_block(rfile: Any, max_bytes: int) -> bytes:
    """The raw header lines up to the blank line, at most ``max_bytes``."""
    lines: list[bytes] = []
    total = 0
    while True:
        line = rfile.readline(max_bytes - total + 1)
        total += len(line)
        if total > max_bytes:
            raise RequestRejected(431, "header_too_large", f"the request headers exceed {max_bytes} bytes")
        if not line.endswith(b"\n"):
            raise RequestRejected(400, "bad_request", "the connection closed inside the request headers")
        if line in (b"\r\n", b"\n"):
            return b"".join(lines)
        if line[:1] in (b" ", b"\t"):
            raise RequestRejected(400, "bad_request", "obsolete header line folding is not accepted")
        if not _HEADER_LINE.match(line):
            raise RequestRejected(400, "bad_request", "malformed header line")
        lines.append(line)
        if len(lines) > MAX_HEADER_LINES:
            raise RequestRejected(431, "header_too_large", f"more than {MAX_HEADER_LINES} header lines")


def parse_header_block(block: bytes) -> client.HTTPMessage:
    """The header lines as pywsgi's message class, as ``http.client.
    parse_headers`` (email's compat32 parser) would build it from lines that
    ``read_header_block`` has already checked (each ``token:``, no folding):
    name before the first ``:``, value with leading blanks and the line end
    stripped.  Done directly: the email parser was ~7 % of a data read's
    CPU in the gateway (py-spy).  A CR inside a line, which the email parser
    would have split into two header lines, is refused instead."""
    message = OldMessage()
    for line in block.decode("iso-8859-1").split("\n")[:-1]:
        if "\r" in line[:-1]:
            raise RequestRejected(400, "bad_request", "a bare CR in a header line")
        name, value = line.split(":", 1)
        message.set_raw(name, value.lstrip(" \t").rstrip("\r\n"))
    return message


def check_framing(headers: client.HTTPMessage) -> None:
    """One unambiguous body length, or refuse the request."""
    encodings = headers.get_all("transfer-encoding") or []
    lengths = headers.get_all("content-length") or []
    if encodings:
        if lengths:
            raise RequestRejected(400, "ambiguous_framing", "Content-Length and Transfer-Encoding together")
        if len(encodings) != 1 or encodings[0].strip().lower() != "chunked":
            raise RequestRejected(400, "unsupported_transfer_encoding",
                                  "the only Transfer-Encoding accepted is a single 'chunked'")
    if len(lengths) > 1:
        raise RequestRejected(400, "ambiguous_framing", "more than one Content-Length header")
    if lengths and not _CONTENT_LENGTH.fullmatch(lengths[0].strip()):
        raise RequestRejected(400, "ambiguous_framing", "Content-Length must be a decimal number")


class BoundedInput(Input):
    """pywsgi's request body, with chunked bodies held to the body limit and
    a bounded drain of what the app left unread."""

    __slots__ = ("abandoned", "max_body_bytes", "received")

    def __init__(self, rfile: Any, content_length: int | None, socket: Any, chunked_input: bool,
                 max_body_bytes: int) -> None:
        super().__init__(rfile, content_length, socket=socket, chunked_input=chunked_input)
        self.max_body_bytes = max_body_bytes
        self.received = 0
        self.abandoned = False

    def _chunked_read(self, length: int | None = None, use_readline: bool = False) -> bytes:
        try:
            data = super()._chunked_read(length, use_readline)
        except (OSError, ValueError):
            self.abandoned = True  # the stream is out of sync: never read another request from it
            raise
        self.received += len(data)
        if self.received > self.max_body_bytes:
            self.abandoned = True
            raise RequestEntityTooLarge(f"the request body exceeds {self.max_body_bytes} bytes")
        return data

    def will_abandon(self) -> bool:
        """Whether what the app left unread is too much to drain."""
        if self.abandoned or (self.chunked_input and self.received > self.max_body_bytes):
            return True
        return not self.chunked_input and (self.content_length or 0) - self.position > DRAIN_LIMIT_BYTES

    def _discard(self) -> None:
        if self.abandoned:
            return
        if self.chunked_input:
            try:
                super()._discard()
            except RequestEntityTooLarge:
                pass  # abandoned is set: the connection will be closed
            return
        if (self.content_length or 0) - self.position > DRAIN_LIMIT_BYTES:
            self.abandoned = True
            return
        super()._discard()


class StrictWSGIHandler(WSGIHandler):
    """Set ``header_timeout_s``, ``idle_timeout_s``, ``max_header_bytes`` and
    ``max_body_bytes`` on a subclass (see :func:`handler_class`)."""

    header_timeout_s: float = Settings.http_header_timeout_s
    idle_timeout_s: float = Settings.http_idle_timeout_s
    max_header_bytes: int = Settings.http_max_header_bytes
    max_body_bytes: int = Settings.max_body_bytes
    settings: Settings = Settings()
    _request_started = 0.0
    _in_response = False

    def handle(self) -> None:
        # Every blocking read and write on this connection, including the
        # wait for the next keep-alive request, gives up after this long.
        self.socket.settimeout(self.idle_timeout_s)
        super().handle()

    def read_requestline(self) -> str:
        try:
            if not self.rfile.peek(1):  # idle wait: the socket timeout
                return ""
        except OSError:
            return ""  # idle timeout or reset: close quietly
        self._request_started = time.monotonic()
        line = ""
        with gevent.Timeout(self.header_timeout_s, False):
            line = super().read_requestline()
        if not line:
            return ""  # the request line did not arrive in time: close quietly
        if len(line) >= MAX_REQUEST_LINE:
            self._reject(414, "uri_too_long", f"the request line exceeds {MAX_REQUEST_LINE} bytes")
            return ""
        return line

    def read_request(self, raw_requestline: str) -> bool:
        remaining = self.header_timeout_s - (time.monotonic() - self._request_started)
        timeout = RequestRejected(408, "request_timeout",
                                  f"the request headers did not arrive within {self.header_timeout_s:g} s")
        with gevent.Timeout(max(remaining, 0.001), timeout):
            return super().read_request(raw_requestline)

    def MessageClass(self, rfile: Any, *args: Any) -> client.HTTPMessage:
        headers = parse_header_block(read_header_block(rfile, self.max_header_bytes))
        check_framing(headers)
        return headers

    def get_environ(self) -> dict[str, Any]:
        environ = super().get_environ()
        if environ.get("wsgi.input") is self.wsgi_input:
            self.wsgi_input = BoundedInput(self.rfile, self.content_length, self.wsgi_input.socket,
                                           self.wsgi_input.chunked_input,
                                           body_limit(self.settings, environ.get("PATH_INFO", "")))
            environ["wsgi.input"] = self.wsgi_input
        return environ

    def handle_one_response(self) -> None:
        self._in_response = True
        try:
            super().handle_one_response()
        finally:
            self._in_response = False
        if isinstance(self.wsgi_input, BoundedInput) and self.wsgi_input.abandoned:
            self.close_connection = True  # the unread body would parse as the next request
            self._linger()

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        # Tell the client now, in this response, that the connection ends
        # here, so that it does not send its next request on it.
        if isinstance(self.wsgi_input, BoundedInput) and self.wsgi_input.will_abandon():
            headers = [*headers, ("Connection", "close")]
        return super().start_response(status, headers, exc_info)

    def _handle_client_error(self, ex: BaseException) -> None:  # type: ignore[override]
        if self._in_response:
            # A broken chunked body while the app runs: pywsgi itself answers
            # (a plain 400 if nothing was sent yet) and closes the connection.
            log.info("bad request body from %s: %r", self.client_address, str(ex)[:200])
            return
        if isinstance(ex, RequestRejected):
            self._reject(ex.status, ex.code, ex.message, str(ex))
        else:  # pywsgi's own parse errors (bad request line, bad chunk, ...)
            self._reject(400, "bad_request", "malformed HTTP request", str(ex))
        # None: pywsgi's request loop ends and closes the connection.

    def _reject(self, status: int, code: str, message: str, detail: str = "") -> None:
        """Answer with a JSON error, then close gracefully (see LINGER_S)."""
        peer = self.client_address[0] if isinstance(self.client_address, tuple) else self.client_address
        log.info("refused request from %s: %s %s: %r", peer, status, code, (detail or message)[:200])
        try:
            self.socket.sendall(error_bytes(status, code, message))
        except OSError:
            return
        self._linger()

    def _linger(self) -> None:
        try:
            self.socket.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_S
            drained = 0
            while drained < LINGER_MAX_BYTES and (left := deadline - time.monotonic()) > 0:
                self.socket.settimeout(left)
                data = self.socket.recv(65536)
                if not data:
                    break
                drained += len(data)
        except OSError:
            pass


def handler_class(settings: Settings, base: type[StrictWSGIHandler] = StrictWSGIHandler) -> type[StrictWSGIHandler]:
    """A handler class configured from the gateway's Settings."""
    return type("ConfiguredWSGIHandler", (base,), {
        "header_timeout_s": settings.http_header_timeout_s,
        "idle_timeout_s": settings.http_idle_timeout_s,
        "max_header_bytes": settings.http_max_header_bytes,
        "max_body_bytes": settings.max_body_bytes,
        "settings": settings,
    })
