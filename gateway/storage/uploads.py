"""Streaming request bodies: a raw body (its Content-Type is the object's)
or ``multipart/form-data`` as storage3 sends it (fields ``cacheControl`` and
``metadata``, then the ``file`` part).  Chunks go straight to the backend,
counted and hashed on the way, so memory does not grow with the object."""
from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from typing import Any

from flask import Request
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import (
    Data,
    Epilogue,
    Field,
    File,
    MultipartDecoder,
    NeedData,
)

from gateway.storage.errors import StorageError

CHUNK_BYTES = 256 * 1024
# Form fields other than the file are small (cacheControl, metadata JSON).
MAX_FIELD_BYTES = 64 * 1024
MAX_PARTS = 16
# Multipart framing around the file part (boundaries, part headers, the
# small form fields): allowed on top of the object size limit.
MULTIPART_SLACK_BYTES = 256 * 1024
DEFAULT_MIMETYPE = "application/octet-stream"


def payload_too_large(limit: int, what: str = "object") -> StorageError:
    return StorageError(413, "payload_too_large", f"the {what} exceeds the maximum allowed size ({limit} bytes)")


class UploadBody:
    """``start()`` reads up to the first byte of the object (so the MIME type
    and options are known before anything is stored); ``chunks()`` then
    yields the object's bytes and raises 413 past ``limit``."""

    def __init__(self, request: Request, limit: int) -> None:
        self._request = request
        self.limit = limit
        self.size = 0
        self._body_bytes = 0
        # ETag: the first 128 bits of SHA-256 (an opaque change marker; with
        # SHA extensions it costs half the CPU of S3's MD5, the largest share
        # of an upload's CPU here).
        self._digest = hashlib.sha256()
        self.mimetype = DEFAULT_MIMETYPE
        self.cache_control = request.headers.get("cache-control", "") or ""
        self.user_metadata: dict[str, Any] | None = _header_metadata(request.headers.get("x-metadata"))
        self._multipart = request.mimetype == "multipart/form-data"
        # A server that terminates the body itself (gevent's pywsgi: chunked
        # or Content-Length) is read directly; werkzeug's LimitedStream
        # wrapper would add a copy per chunk.  Limits are counted in chunks().
        environ = request.environ
        self._stream = environ["wsgi.input"] if environ.get("wsgi.input_terminated") else request.stream
        self._decoder: MultipartDecoder | None = None

    @property
    def etag(self) -> str:
        return f'"{self._digest.hexdigest()[:32]}"'

    def _read(self) -> bytes:
        try:
            data = self._stream.read(CHUNK_BYTES)
        except OSError as exc:  # the client went away mid-body
            raise StorageError(400, "upload_interrupted", "the request body ended early") from exc
        self._body_bytes += len(data)
        if self._body_bytes > self.limit + MULTIPART_SLACK_BYTES:   # the whole body, framing included
            raise payload_too_large(self.limit)
        return data

    # -- reading -----------------------------------------------------------
    def start(self) -> None:
        if not self._multipart:
            self.mimetype = self._request.headers.get("content-type") or DEFAULT_MIMETYPE
            return
        boundary = parse_options_header(self._request.headers.get("content-type", ""))[1].get("boundary")
        if not boundary:
            raise StorageError(400, "invalid_multipart", "multipart/form-data without a boundary")
        self._decoder = MultipartDecoder(boundary.encode(), max_form_memory_size=4 * CHUNK_BYTES,
                                         max_parts=MAX_PARTS)
        field: str | None = None
        value = bytearray()
        for event in self._events():
            if isinstance(event, Field):
                field, value = event.name, bytearray()
            elif isinstance(event, File):
                self.mimetype = event.headers.get("content-type") or DEFAULT_MIMETYPE
                return
            elif isinstance(event, Data) and field is not None:
                value.extend(event.data)
                if len(value) > MAX_FIELD_BYTES:
                    raise StorageError(413, "payload_too_large", f"form field '{field}' is too large")
                if not event.more_data:
                    self._field(field, bytes(value))
                    field = None
            elif isinstance(event, Epilogue):
                break
        raise StorageError(400, "invalid_multipart", "the form has no file part")

    def _events(self) -> Iterator[Any]:
        assert self._decoder is not None
        while True:
            try:
                event = self._decoder.next_event()
            except ValueError as exc:
                raise StorageError(400, "invalid_multipart", "malformed multipart body",
                                   details=str(exc)[:200]) from None
            if isinstance(event, NeedData):
                data = self._read()
                self._decoder.receive_data(data or None)
                continue
            yield event

    def _field(self, name: str, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace")
        if name == "cacheControl":
            self.cache_control = text
        elif name == "metadata":
            try:
                parsed = json.loads(text)
            except ValueError:
                raise StorageError(400, "invalid_metadata", "'metadata' must be a JSON object") from None
            if not isinstance(parsed, dict):
                raise StorageError(400, "invalid_metadata", "'metadata' must be a JSON object")
            self.user_metadata = parsed

    def chunks(self) -> Iterator[bytes]:
        source = self._multipart_chunks() if self._multipart else self._raw_chunks()
        for chunk in source:
            if not chunk:
                continue
            self.size += len(chunk)
            if self.size > self.limit:
                raise payload_too_large(self.limit)
            self._digest.update(chunk)
            yield chunk

    def _raw_chunks(self) -> Iterator[bytes]:
        expected = self._request.content_length
        received = 0
        while True:
            chunk = self._read()
            if not chunk:
                break
            received += len(chunk)
            yield chunk
        if expected is not None and received != expected:
            raise StorageError(400, "upload_interrupted",
                               f"the request body ended after {received} of {expected} bytes")

    def _multipart_chunks(self) -> Iterator[bytes]:
        for event in self._events():
            if isinstance(event, Data):
                yield event.data
                if not event.more_data:
                    break
        # The rest of the form (trailing fields) is read and ignored.
        for event in self._events():
            if isinstance(event, Data) and len(event.data) > MAX_FIELD_BYTES:
                raise StorageError(413, "payload_too_large", "a trailing form field is too large")
            if isinstance(event, Epilogue):
                break


def _header_metadata(value: str | None) -> dict[str, Any] | None:
    """Supabase's raw uploads carry user metadata as base64 JSON in x-metadata."""
    if not value:
        return None
    try:
        parsed = json.loads(base64.b64decode(value, validate=True))
    except ValueError:
        raise StorageError(400, "invalid_metadata", "x-metadata must be base64-encoded JSON") from None
    if not isinstance(parsed, dict):
        raise StorageError(400, "invalid_metadata", "x-metadata must encode a JSON object")
    return parsed
