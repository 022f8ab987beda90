"""Object storage end to end: Supabase's storage3 client, unchanged,
against the session's real stack (gateway process, PostgreSQL, file backend)."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest
import requests
from storage3 import SyncStorageClient
from storage3.exceptions import StorageApiError

from tests.storage_helpers import api_error, storage_client, unique

EXPIRY_DEADLINE_S = 30.0

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


@pytest.fixture(scope="module")
def clients(gateway_url, tokens) -> dict[str, SyncStorageClient]:
    return {name: storage_client(gateway_url, token) for name, token in tokens.items()}


def _drop(client: SyncStorageClient, bucket_id: str) -> None:
    with contextlib.suppress(StorageApiError):   # a test may have deleted it already
        client.empty_bucket(bucket_id)
        client.delete_bucket(bucket_id)


@pytest.fixture()
def alice_bucket(clients) -> Iterator[str]:
    bucket_id = unique("docs")
    clients["alice"].create_bucket(bucket_id)
    yield bucket_id
    _drop(clients["alice"], bucket_id)


def test_bucket_lifecycle(clients) -> None:
    alice = clients["alice"]
    bucket_id = unique("life")
    assert alice.create_bucket(bucket_id, options={"public": False, "file_size_limit": 1024,
                                                   "allowed_mime_types": ["text/plain"]}) == {"name": bucket_id}
    try:
        bucket = alice.get_bucket(bucket_id)
        assert (bucket.id, bucket.file_size_limit, bucket.allowed_mime_types) == (bucket_id, 1024, ["text/plain"])
        assert bucket_id in [b.id for b in alice.list_buckets()]
        duplicate = api_error(alice.create_bucket, bucket_id)
        assert (duplicate.status, duplicate.code) == ("409", "Duplicate")
        alice.update_bucket(bucket_id, {"public": True, "file_size_limit": 2048, "allowed_mime_types": ["image/*"]})
        updated = alice.get_bucket(bucket_id)
        assert (updated.public, updated.file_size_limit, updated.allowed_mime_types) == (True, 2048, ["image/*"])
        alice.from_(bucket_id).upload("a.png", PNG, {"content-type": "image/png"})
        not_empty = api_error(alice.delete_bucket, bucket_id)
        assert (not_empty.status, not_empty.code) == ("409", "bucket_not_empty")
        assert alice.empty_bucket(bucket_id) == {"message": "Successfully emptied"}
        assert alice.from_(bucket_id).list() == []
    finally:
        _drop(alice, bucket_id)
    gone = api_error(alice.get_bucket, bucket_id)
    assert (gone.status, gone.code) == ("404", "not_found")


def test_upload_download_info_upsert(clients, alice_bucket) -> None:
    files = clients["alice"].from_(alice_bucket)
    response = files.upload("notes/hello.txt", b"hello world", {"content-type": "text/plain",
                                                                "metadata": {"origin": "test"}})
    assert response.full_path == f"{alice_bucket}/notes/hello.txt"
    assert files.download("notes/hello.txt") == b"hello world"
    info = files.info("notes/hello.txt")
    assert (info["size"], info["content_type"], info["metadata"]) == (11, "text/plain", {"origin": "test"})
    assert info["cache_control"] == "max-age=3600" and info["etag"].startswith('"')
    assert files.exists("notes/hello.txt") and not files.exists("notes/missing.txt")
    duplicate = api_error(files.upload, "notes/hello.txt", b"again")
    assert (duplicate.status, duplicate.code) == ("409", "Duplicate")
    files.upload("notes/hello.txt", b"replaced by x-upsert", {"upsert": "true"})
    assert files.download("notes/hello.txt") == b"replaced by x-upsert"
    files.update("notes/hello.txt", b"replaced by PUT")
    assert files.download("notes/hello.txt") == b"replaced by PUT"
    assert files.info("notes/hello.txt")["size"] == len(b"replaced by PUT")


def test_list_prefix_limit_offset_sort_search(clients, alice_bucket) -> None:
    files = clients["alice"].from_(alice_bucket)
    for path in ("a.txt", "b.txt", "c.log", "folder/c.txt", "folder/sub/d.txt", "folder/e.txt"):
        files.upload(path, path.encode())
    root = files.list()
    assert [(item["name"], item["id"] is None) for item in root] == [
        ("a.txt", False), ("b.txt", False), ("c.log", False), ("folder", True)]
    assert root[0]["metadata"]["size"] == len(b"a.txt") and root[3]["metadata"] is None
    assert [item["name"] for item in files.list("folder")] == ["c.txt", "e.txt", "sub"]
    assert [item["name"] for item in files.list("folder/sub/")] == ["d.txt"]
    assert [item["name"] for item in files.list(options={"limit": 2, "offset": 1})] == ["b.txt", "c.log"]
    assert [item["name"] for item in files.list(options={"sortBy": {"column": "name", "order": "desc"}})] == [
        "folder", "c.log", "b.txt", "a.txt"]
    assert [item["name"] for item in files.list(options={"search": "C"})] == ["c.log"]
    bad = api_error(files.list, options={"sortBy": {"column": "size; drop table x", "order": "asc"}})
    assert (bad.status, bad.code) == ("400", "invalid_list_options")
    assert files.list("nothing/here") == []


def test_move_copy_remove(clients, alice_bucket) -> None:
    files = clients["alice"].from_(alice_bucket)
    files.upload("one.txt", b"first")
    files.upload("two.txt", b"second")
    assert files.move("one.txt", "moved/one.txt") == {"message": "Successfully moved"}
    assert not files.exists("one.txt") and files.download("moved/one.txt") == b"first"
    copied = files.copy("two.txt", "copies/two.txt")
    assert copied["Key"] == f"{alice_bucket}/copies/two.txt"
    assert files.download("copies/two.txt") == b"second" and files.download("two.txt") == b"second"
    taken = api_error(files.move, "two.txt", "moved/one.txt")
    assert (taken.status, taken.code) == ("409", "Duplicate")
    missing = api_error(files.copy, "nope.txt", "x.txt")
    assert (missing.status, missing.code) == ("404", "not_found")
    removed = files.remove(["moved/one.txt", "two.txt", "not-there.txt"])
    assert sorted(item["name"] for item in removed) == ["moved/one.txt", "two.txt"]
    assert not files.exists("two.txt") and files.download("copies/two.txt") == b"second"


def test_same_bucket_id_in_both_tenants(clients) -> None:
    alice, charlie = clients["alice"], clients["charlie"]
    bucket_id = unique("shared")
    alice.create_bucket(bucket_id)
    charlie.create_bucket(bucket_id)
    try:
        alice.from_(bucket_id).upload("x.txt", b"tenant one")
        charlie.from_(bucket_id).upload("x.txt", b"tenant two")
        assert alice.from_(bucket_id).download("x.txt") == b"tenant one"
        assert charlie.from_(bucket_id).download("x.txt") == b"tenant two"
        alice.empty_bucket(bucket_id)
        assert charlie.from_(bucket_id).download("x.txt") == b"tenant two"
    finally:
        _drop(alice, bucket_id)
        _drop(charlie, bucket_id)


def test_other_tenant_answers_404_never_403(clients, alice_bucket) -> None:
    alice, charlie = clients["alice"], clients["charlie"]
    alice.from_(alice_bucket).upload("secret.txt", b"tenant one only")
    theirs = charlie.from_(alice_bucket)
    calls = [
        (charlie.get_bucket, (alice_bucket,)),
        (charlie.update_bucket, (alice_bucket, {"public": True})),
        (charlie.empty_bucket, (alice_bucket,)),
        (charlie.delete_bucket, (alice_bucket,)),
        (theirs.download, ("secret.txt",)),
        (theirs.info, ("secret.txt",)),
        (theirs.list, ()),
        (theirs.upload, ("planted.txt", b"x")),
        (theirs.update, ("secret.txt", b"overwritten")),
        (theirs.move, ("secret.txt", "stolen.txt")),
        (theirs.copy, ("secret.txt", "stolen.txt")),
        (theirs.remove, (["secret.txt"],)),
        (theirs.create_signed_url, ("secret.txt", 60)),
        (theirs.create_signed_upload_url, ("planted.txt",)),
    ]
    for call, args in calls:
        error = api_error(call, *args)
        assert (error.status, error.code) == ("404", "not_found"), call.__name__
    assert not theirs.exists("secret.txt")
    assert alice_bucket not in [b.id for b in charlie.list_buckets()]
    assert alice.from_(alice_bucket).download("secret.txt") == b"tenant one only"
    assert [item["name"] for item in alice.from_(alice_bucket).list()] == ["secret.txt"]


def test_user_reads_and_every_other_write_is_403(clients, alice_bucket) -> None:
    alice, bob = clients["alice"], clients["bob"]
    alice.from_(alice_bucket).upload("doc.txt", b"readable")
    files = bob.from_(alice_bucket)
    assert files.download("doc.txt") == b"readable"
    assert files.info("doc.txt")["size"] == 8 and files.exists("doc.txt")
    assert [item["name"] for item in files.list()] == ["doc.txt"]
    assert bob.get_bucket(alice_bucket).id == alice_bucket
    assert alice_bucket in [b.id for b in bob.list_buckets()]
    signed = files.create_signed_url("doc.txt", 60)["signedURL"]
    assert requests.get(signed, timeout=10).content == b"readable"
    writes = [
        (bob.create_bucket, (unique("bob"),)),
        (bob.update_bucket, (alice_bucket, {"public": True})),
        (bob.empty_bucket, (alice_bucket,)),
        (bob.delete_bucket, (alice_bucket,)),
        (files.upload, ("bob.txt", b"x")),
        (files.update, ("doc.txt", b"x")),
        (files.move, ("doc.txt", "bob.txt")),
        (files.copy, ("doc.txt", "bob.txt")),
        (files.remove, (["doc.txt"],)),
        (files.create_signed_upload_url, ("bob.txt",)),
    ]
    for call, args in writes:
        error = api_error(call, *args)
        assert (error.status, error.code) == ("403", "forbidden"), call.__name__
    assert alice.from_(alice_bucket).download("doc.txt") == b"readable"
    assert [item["name"] for item in alice.from_(alice_bucket).list()] == ["doc.txt"]


def test_signed_download_urls(clients, alice_bucket, gateway_url) -> None:
    files = clients["alice"].from_(alice_bucket)
    files.upload("dir/report 1.txt", b"signed bytes")
    files.upload("dir/other.txt", b"other bytes")
    url = files.create_signed_url("dir/report 1.txt", 60)["signedURL"]
    assert "token=" in url
    plain = requests.get(url, timeout=10)   # no Authorization header
    assert plain.status_code == 200 and plain.content == b"signed bytes"
    edited = requests.get(url.replace("report%201.txt", "other.txt"), timeout=10)
    assert edited.status_code == 400 and edited.json()["error"] == "invalid_signature"
    tampered = requests.get(url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB"), timeout=10)
    assert tampered.status_code == 400
    short = files.create_signed_url("dir/other.txt", 1)["signedURL"]
    # Polled, not slept: the 1 s URL must become refused as expired (and
    # stay so) within a generous deadline, however slow the machine.
    deadline = time.monotonic() + EXPIRY_DEADLINE_S
    while (expired := requests.get(short, timeout=10)).status_code == 200:
        assert time.monotonic() < deadline, f"a 1 s signed URL still worked after {EXPIRY_DEADLINE_S} s"
        time.sleep(0.2)
    assert expired.status_code == 400 and "expired" in expired.json()["message"], expired.text
    assert requests.get(short, timeout=10).status_code == 400
    many = files.create_signed_urls(["dir/other.txt", "dir/absent.txt"], 60)
    assert many[0]["error"] is None and requests.get(many[0]["signedURL"], timeout=10).content == b"other bytes"
    assert many[1]["signedURL"] is None and many[1]["error"]
    download = files.create_signed_url("dir/other.txt", 60, {"download": "saved.txt"})["signedURL"]
    assert 'filename="saved.txt"' in requests.get(download, timeout=10).headers["Content-Disposition"]
    # A signed URL of tenant 1 does not open tenant 2's bucket of the same id.
    charlie = clients["charlie"]
    charlie.create_bucket(alice_bucket)
    try:
        charlie.from_(alice_bucket).upload("dir/report 1.txt", b"tenant two")
        assert requests.get(url, timeout=10).content == b"signed bytes"
    finally:
        _drop(charlie, alice_bucket)


def test_signed_upload_urls(clients, alice_bucket, gateway_url) -> None:
    files = clients["alice"].from_(alice_bucket)
    signed = files.create_signed_upload_url("uploads/in.bin")
    anonymous = storage_client(gateway_url).from_(alice_bucket)   # no token at all
    response = anonymous.upload_to_signed_url("uploads/in.bin", signed["token"], b"\x00\x01 via signed url",
                                              {"content-type": "application/octet-stream"})
    assert response.full_path == f"{alice_bucket}/uploads/in.bin"
    assert files.download("uploads/in.bin") == b"\x00\x01 via signed url"
    # The token is bound to its path: another path is refused and nothing appears.
    other = api_error(anonymous.upload_to_signed_url, "uploads/other.bin", signed["token"], b"x")
    assert (other.status, other.code) == ("400", "invalid_signature")
    assert not files.exists("uploads/other.bin")
    # Without upsert in the grant, a second upload to the same path is a conflict.
    again = api_error(anonymous.upload_to_signed_url, "uploads/in.bin", signed["token"], b"y")
    assert again.status == "409"
    forged = api_error(anonymous.upload_to_signed_url, "uploads/in.bin", signed["token"][:-4] + "abcd", b"x")
    assert forged.status == "400"
    download_token = requests.utils.urlparse(files.create_signed_url("uploads/in.bin", 60)["signedURL"]).query
    misuse = requests.put(f"{gateway_url}/storage/v1/object/upload/sign/{alice_bucket}/uploads/in.bin?"
                          f"{download_token}", data=b"x", timeout=10)
    assert misuse.status_code == 400   # a download grant is not an upload grant


def test_range_requests(clients, alice_bucket, gateway_url, tokens) -> None:
    files = clients["alice"].from_(alice_bucket)
    payload = bytes(range(256)) * 4
    files.upload("range.bin", payload, {"content-type": "application/octet-stream"})
    url = f"{gateway_url}/storage/v1/object/{alice_bucket}/range.bin"
    headers = {"Authorization": f"Bearer {tokens['bob']}"}
    part = requests.get(url, headers={**headers, "Range": "bytes=10-19"}, timeout=10)
    assert part.status_code == 206 and part.content == payload[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(payload)}"
    tail = requests.get(url, headers={**headers, "Range": "bytes=-5"}, timeout=10)
    assert tail.status_code == 206 and tail.content == payload[-5:]
    beyond = requests.get(url, headers={**headers, "Range": f"bytes={len(payload) + 10}-"}, timeout=10)
    assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{len(payload)}"
    whole = requests.get(url, headers=headers, timeout=10)
    assert whole.status_code == 200 and whole.content == payload and whole.headers["Accept-Ranges"] == "bytes"
    head = requests.head(url, headers=headers, timeout=10)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(payload))
    cached = requests.get(url, headers={**headers, "If-None-Match": whole.headers["ETag"]}, timeout=10)
    assert cached.status_code == 304


def test_bucket_limits_size_and_mime(clients) -> None:
    alice = clients["alice"]
    bucket_id = unique("limited")
    alice.create_bucket(bucket_id, options={"file_size_limit": 1000, "allowed_mime_types": ["image/png", "text/*"]})
    files = alice.from_(bucket_id)
    try:
        too_big = api_error(files.upload, "big.png", b"x" * 1001, {"content-type": "image/png"})
        assert (too_big.status, too_big.code) == ("413", "payload_too_large")
        wrong_type = api_error(files.upload, "a.pdf", b"%PDF", {"content-type": "application/pdf"})
        assert (wrong_type.status, wrong_type.code) == ("415", "invalid_mime_type")
        files.upload("ok.png", PNG, {"content-type": "image/png"})
        files.upload("ok.csv", b"a,b", {"content-type": "text/csv"})
        assert [item["name"] for item in files.list()] == ["ok.csv", "ok.png"]
        bad_limit = api_error(alice.update_bucket, bucket_id, {"file_size_limit": -1})
        assert bad_limit.status == "400"
        bad_types = api_error(alice.update_bucket, bucket_id, {"allowed_mime_types": ["not a type"]})
        assert bad_types.status == "400"
    finally:
        _drop(alice, bucket_id)


@pytest.mark.parametrize("path", ["a/%2e%2e/b.txt", "..%2Fescape.txt", "a/%00b.txt", "a/b%0A.txt",
                                  "x" * 1100, "a/%2E/b.txt", "%2Fabs.txt"])
def test_traversal_and_bad_paths_are_400(gateway_url, tokens, alice_bucket, path) -> None:
    url = f"{gateway_url}/storage/v1/object/{alice_bucket}/{path}"
    response = requests.post(url, data=b"x", headers={"Authorization": f"Bearer {tokens['alice']}",
                                                       "Content-Type": "text/plain"}, timeout=10)
    body = response.json()
    # NUL is refused at the edge for every route (invalid_input), the rest by storage's path rules.
    expected = "invalid_input" if "%00" in path else "invalid_key"
    assert response.status_code == 400 and body["error"] == expected, (path, body)
    assert body.keys() >= {"statusCode", "error", "message", "code", "details", "hint"}


def test_bad_paths_in_json_bodies(clients, alice_bucket) -> None:
    files = clients["alice"].from_(alice_bucket)
    files.upload("safe.txt", b"x")
    for destination in ("../outside.txt", "/absolute.txt", "a//b.txt", "nul\x00.txt", "y" * 1025):
        error = api_error(files.move, "safe.txt", destination)
        expected = "PGRST102" if "\x00" in destination else "invalid_key"   # NUL: the JSON body is refused
        assert (error.status, error.code) == ("400", expected), destination
    error = api_error(files.remove, ["../../etc/passwd"])
    assert (error.status, error.code) == ("400", "invalid_key")
    bad_bucket = api_error(clients["alice"].create_bucket, "../up")
    assert (bad_bucket.status, bad_bucket.code) == ("400", "invalid_bucket_name")
    assert files.download("safe.txt") == b"x"


def test_errors_have_both_shapes(gateway_url, tokens) -> None:
    unauthenticated = requests.get(f"{gateway_url}/storage/v1/bucket", timeout=10)
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["statusCode"] == "401" and unauthenticated.json()["error"] == "invalid_token"
    anonymous = storage_client(gateway_url)
    error = api_error(anonymous.list_buckets)
    assert (error.status, error.code) == ("401", "invalid_token")
    unknown = requests.get(f"{gateway_url}/storage/v1/nothing/here",
                           headers={"Authorization": f"Bearer {tokens['alice']}"}, timeout=10)
    assert unknown.status_code == 404 and unknown.json()["error"] == "route_not_found"
    malformed = requests.post(f"{gateway_url}/storage/v1/bucket", data="{", timeout=10,
                              headers={"Authorization": f"Bearer {tokens['alice']}",
                                       "Content-Type": "application/json"})
    assert malformed.status_code == 400 and malformed.json()["statusCode"] == "400"


def test_move_between_buckets_and_authenticated_download(clients, alice_bucket, gateway_url, tokens) -> None:
    alice, charlie = clients["alice"], clients["charlie"]
    second, theirs = unique("second"), unique("theirs")
    alice.create_bucket(second)
    charlie.create_bucket(theirs)
    try:
        files = alice.from_(alice_bucket)
        files.upload("travels.txt", b"moving")
        moved = requests.post(f"{gateway_url}/storage/v1/object/move", timeout=10, headers={
            "Authorization": f"Bearer {tokens['alice']}"}, json={
            "bucketId": alice_bucket, "sourceKey": "travels.txt", "destinationBucket": second,
            "destinationKey": "arrived.txt"})
        assert moved.status_code == 200, moved.text
        assert alice.from_(second).download("arrived.txt") == b"moving" and not files.exists("travels.txt")
        # A bucket that exists only in the other tenant is not a destination.
        refused = requests.post(f"{gateway_url}/storage/v1/object/move", timeout=10, headers={
            "Authorization": f"Bearer {tokens['alice']}"}, json={
            "bucketId": second, "sourceKey": "arrived.txt", "destinationBucket": theirs,
            "destinationKey": "stolen.txt"})
        assert refused.status_code == 404 and refused.json()["error"] == "not_found"
        assert charlie.from_(theirs).list() == []
        authenticated = requests.get(f"{gateway_url}/storage/v1/object/authenticated/{second}/arrived.txt",
                                     headers={"Authorization": f"Bearer {tokens['bob']}"}, timeout=10)
        assert authenticated.status_code == 200 and authenticated.content == b"moving"
        attachment = requests.get(f"{gateway_url}/storage/v1/object/{second}/arrived.txt?download",
                                  headers={"Authorization": f"Bearer {tokens['bob']}"}, timeout=10)
        assert attachment.headers["Content-Disposition"] == 'attachment; filename="arrived.txt"'
    finally:
        _drop(alice, second)
        _drop(charlie, theirs)


def test_move_and_copy_respect_the_destination_buckets_rules(clients, alice_bucket, gateway_url, tokens) -> None:
    alice = clients["alice"]
    images = unique("images")
    alice.create_bucket(images, options={"allowed_mime_types": ["image/png"], "file_size_limit": 100})
    try:
        files = alice.from_(alice_bucket)
        files.upload("note.txt", b"text", {"content-type": "text/plain"})
        files.upload("big.png", PNG * 2, {"content-type": "image/png"})
        for action in ("move", "copy"):
            for source, status, code in (("note.txt", 415, "invalid_mime_type"), ("big.png", 413, "payload_too_large")):
                response = requests.post(f"{gateway_url}/storage/v1/object/{action}", timeout=10,
                                         headers={"Authorization": f"Bearer {tokens['alice']}"},
                                         json={"bucketId": alice_bucket, "sourceKey": source,
                                               "destinationBucket": images, "destinationKey": source})
                assert (response.status_code, response.json()["error"]) == (status, code), (action, source)
        assert alice.from_(images).list() == [] and files.exists("note.txt") and files.exists("big.png")
    finally:
        _drop(alice, images)
