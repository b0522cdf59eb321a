"""What only an object store can get wrong: credentials, reachability, server-side checksums,
unfinished multipart uploads, and secrets that must not leak into errors, logs or reprs."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from isal.isal_zlib import crc32

from shared.backupstore import (
    MIN_PART_SIZE,
    ChecksumMismatch,
    StoreRefused,
    StoreUnavailable,
    output_key,
)
from shared.backupstore.s3 import S3BackupStore
from shared.embedded import free_port

from ..seaweed import SeaweedS3
from .test_contract import KEY, REC_1, TEN_A, sha

Build = Callable[..., S3BackupStore]


def chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it was raised from or during (``from None`` hides them
    from tracebacks, not from code that walks them)."""
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")


async def test_the_store_itself_validates_the_crc32(
    s3_store_for: Build, seaweed_bucket: str
) -> None:
    store = s3_store_for(seaweed_bucket)
    data = b"sent with a deliberately wrong CRC-32" * 50
    try:
        with pytest.raises(ChecksumMismatch) as caught:
            await store.put_bytes(KEY, data, crc32=crc32(data) ^ 0xFFFF)
        # SeaweedFS's answer, not a client-side check: damaged in transit, so worth resending.
        assert "BadDigest" in str(caught.value)
        assert caught.value.transient
        assert await store.stat(KEY) is None
    finally:
        await store.close()


async def test_bad_secret_is_refused_and_never_leaks(
    s3_store_for: Build, seaweed: SeaweedS3, seaweed_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    canary = "CANARY-" + os.urandom(12).hex()
    store = s3_store_for(seaweed_bucket, secret=canary)
    caplog.set_level(logging.DEBUG)  # botocore's request logging included
    errors: list[BaseException] = []
    try:
        for attempt in (
            store.check(),
            store.put_bytes(KEY, b"x"),
            store.stat(KEY),
            store.list(""),
            store.read_bytes(KEY),
            store.delete_prefix(TEN_A),
        ):
            with pytest.raises(StoreRefused) as caught:
                await attempt
            errors.append(caught.value)
    finally:
        await store.close()
    assert "RESGUARDO_BACKUP_S3_ACCESS_KEY_ID" in str(errors[0])
    assert "botocore" in caplog.text  # the SDK's own debug lines were captured too
    texts = [caplog.text, repr(store), str(vars(store))]
    texts += [f"{e!s} {e!r} {e.args!r}" for err in errors for e in chain(err)]
    assert not [t for t in texts if canary in t]
    for pid in (os.getpid(), seaweed.pid):  # nor on any command line
        assert canary not in command_line(pid)
        assert seaweed.secret_access_key not in command_line(pid)


async def test_unknown_access_key_and_missing_bucket_are_refused(
    s3_store_for: Build, seaweed_bucket: str
) -> None:
    stranger = s3_store_for(seaweed_bucket, access_key_id="nobody-we-know")
    no_bucket = s3_store_for("no-such-bucket-here")
    try:
        with pytest.raises(StoreRefused):
            await stranger.put_bytes(KEY, b"x")
        with pytest.raises(StoreRefused, match="does not exist"):
            await no_bucket.check()
        with pytest.raises(StoreRefused, match="does not exist"):
            await no_bucket.put_bytes(KEY, b"x")
    finally:
        await stranger.close()
        await no_bucket.close()


async def test_unreachable_endpoint_fails_fast(s3_store_for: Build) -> None:
    store = s3_store_for("some-bucket", endpoint=f"http://127.0.0.1:{free_port()}")
    try:
        for attempt in (store.check(), store.put_bytes(KEY, b"x"), store.list("")):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="could not be reached") as caught:
                await attempt
            assert time.monotonic() - started < 3  # one retry, under a second of backoff
            assert caught.value.transient
    finally:
        await store.close()


async def test_a_store_that_never_answers_is_given_up_on_in_time(s3_store_for: Build) -> None:
    """Connections are accepted (by the kernel) but never answered: the check gives up."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        store = s3_store_for("some-bucket", endpoint=f"http://127.0.0.1:{port}")
        store.check_timeout = 1.5
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="did not answer within"):
                await store.check()
            assert time.monotonic() - started < 4
        finally:
            await store.close()


async def test_aborted_and_purged_uploads_leave_no_parts(
    s3_store_for: Build, seaweed: SeaweedS3, seaweed_bucket: str, tmp_path: Path
) -> None:
    store = s3_store_for(seaweed_bucket)
    client = seaweed.client()
    key = output_key(TEN_A, REC_1, "call.mkv")
    data = os.urandom(MIN_PART_SIZE + 10)
    (tmp_path / "f").write_bytes(data)
    try:
        with pytest.raises(ChecksumMismatch):
            await store.put_file(key, tmp_path / "f", sha256=sha(b"not it"))
        assert not client.list_multipart_uploads(Bucket=seaweed_bucket).get("Uploads")
        # An upload someone left open, and an object whose name is no key of ours.
        await asyncio.to_thread(
            client.create_multipart_upload, Bucket=seaweed_bucket, Key=f"backup/{key}.part"
        )
        await asyncio.to_thread(
            client.put_object, Bucket=seaweed_bucket, Key=f"backup/{TEN_A}/odd name", Body=b"1"
        )
        assert await store.list(TEN_A) == []  # not ours to show...
        assert await store.delete_prefix(TEN_A) == 1  # ...but a purge removes it
        assert not client.list_multipart_uploads(Bucket=seaweed_bucket).get("Uploads")
        assert not client.list_objects_v2(Bucket=seaweed_bucket).get("Contents")
    finally:
        await store.close()
