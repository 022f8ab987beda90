"""Streaming against the real stack's gateway process: an interrupted
upload leaves nothing visible and no partial file, a body that outgrows
its limit mid-stream is refused with nothing stored, and a 100 MB object
goes in and out while the gateway's memory stays flat."""
from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import requests

from tests.storage_helpers import storage_client, unique

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def storage_dir(running_stack) -> Path:
    return running_stack[0].state_dir / "storage"


@pytest.fixture(scope="module")
def gateway_process(running_stack) -> psutil.Process:
    return psutil.Process(running_stack[1].processes["gateway"].pid)


def _partials(storage_dir: Path) -> list[Path]:
    return sorted((storage_dir / "tmp").glob("*.part"))


def _object_files(storage_dir: Path) -> set[Path]:
    return {path for path in (storage_dir / "objects").rglob("*") if path.is_file()}


def _wait_for(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture()
def bucket(gateway_url, tokens) -> Iterator[str]:
    client = storage_client(gateway_url, tokens["charlie"])
    bucket_id = unique("stream")
    client.create_bucket(bucket_id)
    yield bucket_id
    client.empty_bucket(bucket_id)
    client.delete_bucket(bucket_id)


def _send_part_then_drop(gateway_url: str, path: str, headers: dict[str, str], declared: int, sent: bytes,
                         while_open) -> None:
    parts = urlsplit(gateway_url)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = (f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{head}Content-Length: {declared}\r\n"
               "Connection: close\r\n\r\n").encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request + sent)
        while_open()
    # closing the socket here, with part of the declared body never sent


@pytest.mark.parametrize("multipart", [False, True], ids=["raw", "multipart"])
def test_interrupted_upload_leaves_nothing(gateway_url, tokens, bucket, storage_dir, multipart) -> None:
    before = _object_files(storage_dir)
    headers = {"Authorization": f"Bearer {tokens['charlie']}"}
    body = b"y" * (2 * MIB)
    if multipart:
        boundary = "apprun-test-boundary"
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        prefix = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"cacheControl\"\r\n\r\n3600\r\n"
                  f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.bin\"\r\n"
                  "Content-Type: application/octet-stream\r\n\r\n").encode()
        sent = prefix + body
        declared = len(sent) + 4 * MIB
    else:
        headers["Content-Type"] = "application/octet-stream"
        sent, declared = body, 8 * MIB
    seen_partial: list[bool] = []
    _send_part_then_drop(gateway_url, f"/storage/v1/object/{bucket}/cut.bin", headers, declared, sent,
                         while_open=lambda: seen_partial.append(_wait_for(lambda: bool(_partials(storage_dir)))))
    assert seen_partial == [True]    # the bytes were going to a temporary file...
    assert _wait_for(lambda: not _partials(storage_dir))   # ...which is removed when the client goes away
    files = storage_client(gateway_url, tokens["charlie"]).from_(bucket)
    assert not files.exists("cut.bin") and files.list() == []
    assert _object_files(storage_dir) == before


def test_body_outgrowing_the_limit_midstream_is_413(gateway_url, tokens, storage_dir) -> None:
    client = storage_client(gateway_url, tokens["charlie"])
    bucket_id = unique("small")
    client.create_bucket(bucket_id, options={"file_size_limit": 64 * 1024})
    before = _object_files(storage_dir)
    try:
        def chunked() -> Iterator[bytes]:   # no Content-Length: the limit can only be found while reading
            for _ in range(16):
                yield b"z" * (16 * 1024)

        response = requests.post(f"{gateway_url}/storage/v1/object/{bucket_id}/grows.bin", data=chunked(),
                                 headers={"Authorization": f"Bearer {tokens['charlie']}",
                                          "Content-Type": "application/octet-stream"}, timeout=30)
        assert response.status_code == 413 and response.json()["error"] == "payload_too_large"
        assert not client.from_(bucket_id).exists("grows.bin")
        assert _wait_for(lambda: not _partials(storage_dir)) and _object_files(storage_dir) == before
    finally:
        client.empty_bucket(bucket_id)
        client.delete_bucket(bucket_id)


class PeakRss:
    """Samples a process's RSS every 20 ms in a thread."""

    def __init__(self, process: psutil.Process) -> None:
        self.process, self.peak, self._stop = process, process.memory_info().rss, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:  # noqa: PYI034
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_100_mb_object_streams_with_flat_memory(gateway_url, tokens, bucket, gateway_process) -> None:
    headers = {"Authorization": f"Bearer {tokens['charlie']}"}
    url = f"{gateway_url}/storage/v1/object/{bucket}/big.bin"
    block = bytes(range(256)) * 4096   # 1 MiB
    expected = hashlib.md5(block * 100, usedforsecurity=False).hexdigest()
    # Warm up the code paths so one-off allocations are not counted.
    requests.post(f"{gateway_url}/storage/v1/object/{bucket}/warm.bin", data=block, timeout=30,
                  headers={**headers, "Content-Type": "application/octet-stream"}).raise_for_status()
    requests.get(f"{gateway_url}/storage/v1/object/{bucket}/warm.bin", headers=headers, timeout=30).raise_for_status()
    baseline = gateway_process.memory_info().rss

    def body() -> Iterator[bytes]:
        for _ in range(100):
            yield block

    with PeakRss(gateway_process) as upload_peak:
        response = requests.post(url, data=body(), timeout=300,
                                 headers={**headers, "Content-Type": "application/octet-stream"})
    assert response.status_code == 200, response.text
    digest, size = hashlib.md5(usedforsecurity=False), 0
    with PeakRss(gateway_process) as download_peak, \
            requests.get(url, headers=headers, stream=True, timeout=300) as download:
        assert download.status_code == 200 and download.headers["Content-Length"] == str(100 * MIB)
        for chunk in download.iter_content(MIB):
            digest.update(chunk)
            size += len(chunk)
    assert size == 100 * MIB and digest.hexdigest() == expected
    tail = requests.get(url, headers={**headers, "Range": "bytes=-10"}, timeout=30)
    assert tail.status_code == 206 and tail.content == block[-10:]
    # Generous bound: buffering the object would add at least 100 MB.
    grown_mb = (max(upload_peak.peak, download_peak.peak) - baseline) / MIB
    assert grown_mb < 40, f"gateway RSS grew by {grown_mb:.1f} MB while 100 MB went in and out"
