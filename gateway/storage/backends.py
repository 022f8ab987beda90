"""Where the bytes live.  Objects are immutable: every upload writes a new
opaque key (``<tenant_id>/<random hex>``) and the metadata row points at
it, so a replace is "write new bytes, commit the row, delete the old key"
and a reader never sees a half-written object.

* ``FileBackend`` (default): a temporary file under ``<root>/tmp``, fsynced,
  renamed into ``<root>/objects`` (and the directory fsynced).
* ``S3Backend``: any S3-compatible server (MinIO, S3) through boto3; an
  object appears only once its (multipart) upload completes.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from gateway.native import gevent_patched

READ_CHUNK_BYTES = 256 * 1024
KEY_RE = re.compile(r"^[0-9a-f-]{36}/[0-9a-f]{32}$")
PARTIAL_SUFFIX = ".part"
#: S3's DeleteObjects takes at most this many keys per request.
S3_DELETE_BATCH = 1000


def new_key(tenant_id: str) -> str:
    return f"{tenant_id}/{uuid.uuid4().hex}"


def tenant_of_key(key: str) -> str:
    return key.split("/", 1)[0]


def run_blocking(fn: Callable[..., Any], *args: Any) -> Any:
    """fsync and friends block the whole process under gevent: run them on
    the hub's native thread pool so other requests keep being served."""
    if gevent_patched():
        import gevent

        return gevent.get_hub().threadpool.apply(fn, args)
    return fn(*args)


class ObjectBackend(Protocol):
    kind: str

    def write(self, key: str, chunks: Iterable[bytes]) -> None:
        """Store the chunks under ``key``, all or nothing."""

    def read(self, key: str, start: int, stop: int) -> Iterator[bytes]:
        """Bytes ``[start, stop)``.  Opens the object before returning."""

    def copy(self, source: str, destination: str) -> None: ...

    def delete_many(self, keys: list[str]) -> list[str]:
        """Delete every key (a missing one is not an error) in as few
        blocking steps as the backend allows; returns the keys it could not
        delete."""

    def exists(self, key: str) -> bool: ...

    def list_keys(self) -> Iterator[tuple[str, float]]:
        """Every stored key with its modification time (epoch seconds)."""

    def sweep_partials(self, cutoff: float) -> int:
        """Remove interrupted writes older than ``cutoff``; returns how many."""


def _check_key(key: str) -> str:
    if not KEY_RE.match(key):
        raise ValueError(f"not a storage key: {key!r}")
    return key


class FileBackend:
    kind = "file"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.objects_dir = self.root / "objects"
        self.tmp_dir = self.root / "tmp"

    def path_of(self, key: str) -> Path:
        tenant, name = _check_key(key).split("/")
        return self.objects_dir / tenant / name[:2] / name

    def write(self, key: str, chunks: Iterable[bytes]) -> None:
        final = self.path_of(key)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        partial = self.tmp_dir / f"{uuid.uuid4().hex}{PARTIAL_SUFFIX}"
        try:
            with open(partial, "xb") as handle:
                handle.writelines(chunks)
                handle.flush()
                run_blocking(os.fsync, handle.fileno())
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, final)
            run_blocking(_fsync_dir, final.parent)
        except BaseException:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise

    def read(self, key: str, start: int, stop: int) -> Iterator[bytes]:
        handle = open(self.path_of(key), "rb")  # noqa: SIM115 - raises now if missing, not mid-response
        handle.seek(start)
        return _file_chunks(handle, stop - start)

    def copy(self, source: str, destination: str) -> None:
        target = self.path_of(destination)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Objects are immutable, so a hard link is a safe, free copy.
            os.link(self.path_of(source), target)
            # Fresh mtime: the sweeper must not take a new key for an old orphan.
            os.utime(target)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            size = self.path_of(source).stat().st_size
            self.write(destination, self.read(source, 0, size))

    def delete_many(self, keys: list[str]) -> list[str]:
        # One hop to the native pool for the whole list: unlinking a bucket's
        # few hundred files on the hub blocked every tenant's requests for
        # tens of milliseconds (gevent's monitor, the noisy profile's cleanup).
        return run_blocking(self._unlink_all, keys) if keys else []

    def _unlink_all(self, keys: list[str]) -> list[str]:
        failed = []
        for key in keys:
            try:
                os.unlink(self.path_of(key))
            except FileNotFoundError:
                continue
            except (OSError, ValueError):
                failed.append(key)
        return failed

    def exists(self, key: str) -> bool:
        return self.path_of(key).is_file()

    def list_keys(self) -> Iterator[tuple[str, float]]:
        if not self.objects_dir.is_dir():
            return
        for tenant_dir in self.objects_dir.iterdir():
            for shard in (tenant_dir.iterdir() if tenant_dir.is_dir() else ()):
                for entry in (shard.iterdir() if shard.is_dir() else ()):
                    key = f"{tenant_dir.name}/{entry.name}"
                    if KEY_RE.match(key):
                        with contextlib.suppress(FileNotFoundError):
                            yield key, entry.stat().st_mtime

    def sweep_partials(self, cutoff: float) -> int:
        removed = 0
        if not self.tmp_dir.is_dir():
            return 0
        for entry in self.tmp_dir.glob(f"*{PARTIAL_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < cutoff:
                    entry.unlink()
                    removed += 1
        return removed

    def partials(self) -> list[Path]:
        return sorted(self.tmp_dir.glob(f"*{PARTIAL_SUFFIX}")) if self.tmp_dir.is_dir() else []


def _file_chunks(handle: Any, remaining: int) -> Iterator[bytes]:
    with handle:
        while remaining > 0:
            chunk = handle.read(min(READ_CHUNK_BYTES, remaining))
            if not chunk:
                raise OSError(f"{handle.name} is shorter than its metadata says")
            remaining -= len(chunk)
            yield chunk


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _ChunkReader:
    """A read()-able file object over an iterator of chunks (for boto3)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = bytearray()
        self._done = False

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._buffer) < size):
            try:
                self._buffer.extend(next(self._chunks))
            except StopIteration:
                self._done = True
        if size < 0:
            size = len(self._buffer)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


class S3Backend:
    """MinIO/S3 through boto3.  Memory per upload is bounded by the multipart
    part size (one part in flight, no threads: gevent serves the rest)."""

    kind = "s3"
    PART_BYTES = 8 * 1024 * 1024

    def __init__(self, endpoint: str, bucket: str, access_key: str, secret_key: str, region: str) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.client = boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None, region_name=region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"},
                          connect_timeout=5, read_timeout=60),
        )
        self._transfer = TransferConfig(multipart_threshold=self.PART_BYTES, multipart_chunksize=self.PART_BYTES,
                                        use_threads=False)
        self._bucket_ready = False

    def _ensure_bucket(self) -> None:
        # Lazily, so the gateway starts even while MinIO is still starting.
        if self._bucket_ready:
            return
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            with contextlib.suppress(self.client.exceptions.BucketAlreadyOwnedByYou):
                self.client.create_bucket(Bucket=self.bucket)
        self._bucket_ready = True

    def write(self, key: str, chunks: Iterable[bytes]) -> None:
        self._ensure_bucket()
        self.client.upload_fileobj(_ChunkReader(chunks), self.bucket, _check_key(key), Config=self._transfer)

    def read(self, key: str, start: int, stop: int) -> Iterator[bytes]:
        self._ensure_bucket()
        if stop <= start:
            return iter(())
        body = self.client.get_object(Bucket=self.bucket, Key=_check_key(key),
                                      Range=f"bytes={start}-{stop - 1}")["Body"]
        return _closing_chunks(body)

    def copy(self, source: str, destination: str) -> None:
        self._ensure_bucket()
        self.client.copy_object(Bucket=self.bucket, Key=_check_key(destination),
                                CopySource={"Bucket": self.bucket, "Key": _check_key(source)})

    def delete_many(self, keys: list[str]) -> list[str]:
        """DeleteObjects, up to S3's 1,000 keys per request, instead of one
        request per key (a bucket emptied)."""
        failed: list[str] = []
        if keys:
            self._ensure_bucket()
        for start in range(0, len(keys), S3_DELETE_BATCH):
            batch = keys[start:start + S3_DELETE_BATCH]
            try:
                answer = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": _check_key(key)} for key in batch], "Quiet": True})
            except Exception:  # noqa: BLE001 - the whole batch is left to the orphan sweep
                failed.extend(batch)
                continue
            failed.extend(error["Key"] for error in answer.get("Errors", ()))
        return failed

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        self._ensure_bucket()
        try:
            self.client.head_object(Bucket=self.bucket, Key=_check_key(key))
        except ClientError:
            return False
        return True

    def list_keys(self) -> Iterator[tuple[str, float]]:
        self._ensure_bucket()
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for item in page.get("Contents", ()):
                if KEY_RE.match(item["Key"]):
                    yield item["Key"], item["LastModified"].timestamp()

    def sweep_partials(self, cutoff: float) -> int:
        """Abort multipart uploads a crash left behind."""
        self._ensure_bucket()
        removed = 0
        for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket):
            for upload in page.get("Uploads", ()):
                if upload["Initiated"].timestamp() < cutoff:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                       UploadId=upload["UploadId"])
                    removed += 1
        return removed


def _closing_chunks(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(READ_CHUNK_BYTES)
    finally:
        body.close()


def open_backend(settings: Any) -> ObjectBackend:
    if settings.storage_s3_endpoint:
        return S3Backend(settings.storage_s3_endpoint, settings.storage_s3_bucket, settings.storage_s3_access_key,
                         settings.storage_s3_secret_key, settings.storage_s3_region)
    return FileBackend(settings.storage_dir)

