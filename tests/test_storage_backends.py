"""The byte backends: the S3 backend against moto's S3 server (a stand-in
for MinIO, whose server cannot be installed here), the file backend's
all-or-nothing writes, and the orphan sweep."""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

from gateway.storage import backends
from gateway.storage.backends import FileBackend, new_key
from gateway.storage.errors import StorageError
from gateway.storage.sweeper import sweep
from tests.conftest import TENANT_1, TENANT_2, free_port
from tests.storage_helpers import api_error, storage_app, storage_client, unique

BASE = "http://storage.test"
S3_BUCKET = "apprun-test-objects"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture()
def s3_app(app_config, s3_endpoint, tmp_path):
    return storage_app(app_config, tmp_path, storage_s3_endpoint=s3_endpoint, storage_s3_bucket=S3_BUCKET,
                       storage_s3_access_key="testing", storage_s3_secret_key="testing")


def _s3_keys(endpoint: str) -> set[str]:
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                      region_name="us-east-1")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET)
    return {item["Key"] for page in pages for item in page.get("Contents", ())}


def test_s3_backend_through_storage3(s3_app, s3_endpoint, tokens) -> None:
    alice = storage_client(BASE, tokens["alice"], app=s3_app)
    charlie = storage_client(BASE, tokens["charlie"], app=s3_app)
    bucket_id = unique("s3")
    alice.create_bucket(bucket_id)
    charlie.create_bucket(bucket_id)
    files = alice.from_(bucket_id)
    try:
        payload = os.urandom(9 * 1024 * 1024)   # above the 8 MiB part size: a multipart upload
        files.upload("big.bin", payload, {"content-type": "application/octet-stream"})
        files.upload("small.txt", b"small")
        charlie.from_(bucket_id).upload("small.txt", b"tenant two")
        assert files.download("big.bin") == payload
        assert files.download("small.txt") == b"small"
        assert charlie.from_(bucket_id).download("small.txt") == b"tenant two"
        keys = _s3_keys(s3_endpoint)
        assert len(keys) == 3
        assert sum(key.startswith(TENANT_1 + "/") for key in keys) == 2
        assert sum(key.startswith(TENANT_2 + "/") for key in keys) == 1
        files.update("small.txt", b"replaced")          # the replaced bytes are deleted
        files.copy("small.txt", "copy.txt")
        files.move("copy.txt", "moved.txt")
        assert files.download("moved.txt") == b"replaced"
        assert len(_s3_keys(s3_endpoint)) == 4
        with s3_app.test_client() as client:
            part = client.get(f"/storage/v1/object/{bucket_id}/big.bin",
                              headers={"Authorization": f"Bearer {tokens['bob']}", "Range": "bytes=100-199"})
            assert part.status_code == 206 and part.data == payload[100:200]
        files.remove(["big.bin", "moved.txt"])
        assert len(_s3_keys(s3_endpoint)) == 2
    finally:
        for client in (alice, charlie):
            client.empty_bucket(bucket_id)
            client.delete_bucket(bucket_id)
    assert _s3_keys(s3_endpoint) == set()


def test_s3_refused_upload_leaves_no_object(app_config, s3_endpoint, tokens, tmp_path) -> None:
    app = storage_app(app_config, tmp_path, storage_s3_endpoint=s3_endpoint, storage_s3_bucket=S3_BUCKET,
                      storage_s3_access_key="testing", storage_s3_secret_key="testing",
                      storage_max_object_bytes=1000)
    alice = storage_client(BASE, tokens["alice"], app=app)
    bucket_id = unique("s3limit")
    alice.create_bucket(bucket_id)
    try:
        error = api_error(alice.from_(bucket_id).upload, "big.bin", b"x" * 5000)
        assert (error.status, error.code) == ("413", "payload_too_large")
        # Past the declared length check: a body that grows beyond the limit while streaming.
        backend = app.extensions["apprun.storage"].backend
        key = new_key(TENANT_1)

        def too_long() -> Iterator[bytes]:
            yield b"x" * 600
            raise StorageError(413, "payload_too_large", "over the limit")

        with pytest.raises(StorageError):
            backend.write(key, too_long())
        assert not backend.exists(key)
        assert _s3_keys(s3_endpoint) == set()
    finally:
        alice.delete_bucket(bucket_id)


def test_file_backend_write_is_all_or_nothing(tmp_path) -> None:
    backend = FileBackend(tmp_path)
    key = new_key(TENANT_1)

    def interrupted() -> Iterator[bytes]:
        yield b"half of it"
        raise OSError("client went away")

    with pytest.raises(OSError):
        backend.write(key, interrupted())
    assert not backend.exists(key) and backend.partials() == []
    backend.write(key, [b"all ", b"of it"])
    assert b"".join(backend.read(key, 0, 9)) == b"all of it"
    assert b"".join(backend.read(key, 4, 9)) == b"of it"


def _unlink_threads_under_gevent(monkeypatch, refused: str | None = None) -> list[int]:
    """The backends behave as under gevent (blocking calls go to the hub's
    native pool); each os.unlink records the thread it ran on, and the path
    ``refused`` fails with EACCES."""
    monkeypatch.setattr(backends, "gevent_patched", lambda: True)
    threads: list[int] = []
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        threads.append(threading.get_ident())
        if str(path) == refused:
            raise PermissionError(13, "read-only", str(path))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    return threads


def test_file_backend_deletes_many_in_one_step_off_the_hub(tmp_path, monkeypatch) -> None:
    """delete_many unlinks in the hub's native thread pool, in one hop for
    the whole list: on the hub, emptying a bucket blocked every tenant's
    requests.  A missing key is no failure; an undeletable one is returned."""
    backend = FileBackend(tmp_path)
    keys = [new_key(TENANT_1) for _ in range(3)]
    for key in keys:
        backend.write(key, [b"bytes"])
    stuck = keys[-1]
    unlinked_on = _unlink_threads_under_gevent(monkeypatch, refused=str(backend.path_of(stuck)))
    assert backend.delete_many(keys + [new_key(TENANT_1)]) == [stuck]
    assert [backend.exists(key) for key in keys] == [False, False, True]
    assert len(unlinked_on) == 4 and len(set(unlinked_on)) == 1
    assert threading.get_ident() not in unlinked_on
    assert backend.delete_many([]) == []


def test_emptying_a_bucket_unlinks_its_files_off_the_hub(app_config, tokens, tmp_path, monkeypatch) -> None:
    app = storage_app(app_config, tmp_path)
    backend: FileBackend = app.extensions["apprun.storage"].backend
    alice = storage_client(BASE, tokens["alice"], app=app)
    bucket_id = unique("empty")
    alice.create_bucket(bucket_id)
    try:
        for name in ("a.txt", "b.txt", "c.txt"):
            alice.from_(bucket_id).upload(name, b"bytes")
        assert len(list(backend.list_keys())) == 3
        unlinked_on = _unlink_threads_under_gevent(monkeypatch)
        alice.empty_bucket(bucket_id)
        assert list(backend.list_keys()) == []
        assert len(unlinked_on) == 3 and threading.get_ident() not in unlinked_on
    finally:
        alice.delete_bucket(bucket_id)


def test_sweep_removes_orphans_and_stale_partials_only(app_config, tokens, tmp_path) -> None:
    app = storage_app(app_config, tmp_path)
    backend: FileBackend = app.extensions["apprun.storage"].backend
    alice = storage_client(BASE, tokens["alice"], app=app)
    bucket_id = unique("sweep")
    alice.create_bucket(bucket_id)
    try:
        alice.from_(bucket_id).upload("kept.txt", b"referenced")
        # A crash between the byte write and the metadata commit leaves:
        orphan = new_key(TENANT_1)
        backend.write(orphan, [b"no row points here"])
        backend.tmp_dir.mkdir(parents=True, exist_ok=True)
        stale = backend.tmp_dir / "dead.part"
        stale.write_bytes(b"interrupted")
        assert sweep(app, grace_s=3600).orphans == 0 and backend.exists(orphan)   # still within the grace period
        old = time.time() - 7200
        for key, _mtime in list(backend.list_keys()):   # the referenced object is old too
            os.utime(backend.path_of(key), (old, old))
        os.utime(stale, (old, old))
        result = sweep(app, grace_s=3600)
        assert (result.orphans, result.partials) == (1, 1)
        assert not backend.exists(orphan) and not stale.exists()
        assert alice.from_(bucket_id).download("kept.txt") == b"referenced"
    finally:
        alice.empty_bucket(bucket_id)
        alice.delete_bucket(bucket_id)
