"""Object size limit and per-tenant quotas by plan, in process (each test
builds a gateway with its own limits on the session's database)."""
from __future__ import annotations

import threading
from collections import Counter

from storage3.exceptions import StorageApiError

from tests.conftest import TENANT_1
from tests.storage_helpers import (
    api_error,
    storage_app,
    storage_client,
    tenant_usage,
    unique,
)

BASE = "http://storage.test"


def _bucket(client, bucket_id: str):
    client.create_bucket(bucket_id)
    return client.from_(bucket_id)


def _drop(client, bucket_id: str) -> None:
    client.empty_bucket(bucket_id)
    client.delete_bucket(bucket_id)


def test_object_size_limit_is_413_and_stores_nothing(app_config, tokens, tmp_path) -> None:
    app = storage_app(app_config, tmp_path, storage_max_object_bytes=1000)
    alice = storage_client(BASE, tokens["alice"], app=app)
    bucket_id = unique("size")
    files = _bucket(alice, bucket_id)
    try:
        files.upload("fits.bin", b"x" * 1000)
        error = api_error(files.upload, "too-big.bin", b"x" * 1001)
        assert (error.status, error.code) == ("413", "payload_too_large")
        assert [item["name"] for item in files.list()] == ["fits.bin"]
        assert len(list(app.extensions["apprun.storage"].backend.list_keys())) == 1
    finally:
        _drop(alice, bucket_id)


def test_byte_quota_follows_the_plan(app_config, tokens, tmp_path) -> None:
    """Tenant 1 is on 'free', tenant 2 on 'pro': the same sizes pass or fail by plan."""
    probe = storage_app(app_config, tmp_path / "probe")
    used_bytes, _ = tenant_usage(probe, TENANT_1)
    app = storage_app(app_config, tmp_path / "store", storage_free_quota_bytes=used_bytes + 100,
                      storage_pro_quota_bytes=10 ** 12)
    alice = storage_client(BASE, tokens["alice"], app=app)
    charlie = storage_client(BASE, tokens["charlie"], app=app)
    bucket_id = unique("quota")
    files, charlie_files = _bucket(alice, bucket_id), _bucket(charlie, bucket_id)
    try:
        files.upload("a.bin", b"a" * 50)
        over = api_error(files.upload, "b.bin", b"b" * 60)
        assert (over.status, over.code) == ("413", "quota_bytes_exceeded")
        assert not files.exists("b.bin")
        # A replacement is judged by its net size: 50 -> 90 bytes still fits.
        files.update("a.bin", b"c" * 90)
        assert files.download("a.bin") == b"c" * 90
        assert tenant_usage(app, TENANT_1)[0] == used_bytes + 90
        charlie_files.upload("big.bin", b"d" * 500)   # pro quota
        assert charlie_files.download("big.bin") == b"d" * 500
        # Only the two live objects' bytes remain on the backend.
        assert len(list(app.extensions["apprun.storage"].backend.list_keys())) == 2
    finally:
        _drop(alice, bucket_id)
        _drop(charlie, bucket_id)
    assert tenant_usage(app, TENANT_1)[0] == used_bytes


def test_object_quota_holds_under_concurrent_uploads(app_config, tokens, tmp_path) -> None:
    probe = storage_app(app_config, tmp_path / "probe")
    _, used_objects = tenant_usage(probe, TENANT_1)
    app = storage_app(app_config, tmp_path / "store", storage_free_quota_objects=used_objects + 3)
    alice = storage_client(BASE, tokens["alice"], app=app)
    bucket_id = unique("count")
    _bucket(alice, bucket_id)
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def upload(index: int) -> None:
        files = storage_client(BASE, tokens["alice"], app=app).from_(bucket_id)
        try:
            files.upload(f"f{index}.txt", f"file {index}".encode())
            outcome = "stored"
        except StorageApiError as exc:
            outcome = f"{exc.status} {exc.code}"
        with lock:
            outcomes[outcome] += 1

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert outcomes == {"stored": 3, "413 quota_objects_exceeded": 5}
        assert len(alice.from_(bucket_id).list()) == 3
        assert tenant_usage(app, TENANT_1)[1] == used_objects + 3
        assert len(list(app.extensions["apprun.storage"].backend.list_keys())) == 3
    finally:
        _drop(alice, bucket_id)
    assert tenant_usage(app, TENANT_1)[1] == used_objects


def test_multipart_garbage_around_the_file_is_413_not_stored(app_config, tokens, tmp_path) -> None:
    """Unbounded form framing (a huge preamble or epilogue) is refused by the
    parser's buffer cap as the caller's 413, never as a backend failure."""
    app = storage_app(app_config, tmp_path)
    alice = storage_client(BASE, tokens["alice"], app=app)
    bucket_id = unique("framing")
    alice.create_bucket(bucket_id)
    boundary = "b0undary"
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.bin\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\nabc\r\n--{boundary}--\r\n").encode()
    junk = b"j" * (2 * 1024 * 1024)
    headers = {"Authorization": f"Bearer {tokens['alice']}",
               "Content-Type": f"multipart/form-data; boundary={boundary}"}
    try:
        with app.test_client() as client:
            for name, body in (("epilogue.bin", part + junk), ("preamble.bin", junk + b"\r\n" + part)):
                response = client.post(f"/storage/v1/object/{bucket_id}/{name}", data=body, headers=headers)
                assert response.status_code == 413, (name, response.get_json())
                assert response.get_json()["statusCode"] == "413"
        assert alice.from_(bucket_id).list() == []
        assert list(app.extensions["apprun.storage"].backend.list_keys()) == []
    finally:
        alice.delete_bucket(bucket_id)
