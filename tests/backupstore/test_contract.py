"""The backup store contract: every test runs against the local folder and against SeaweedFS.

What a service may rely on whichever store it is given: digests kept and checked, range reads
for resume, listings by folder (never by string prefix), purges that leave nothing behind, and
the same error classes for the same failures.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest
from isal.isal_zlib import crc32

from shared.backupstore import (
    MIN_PART_SIZE,
    BackupStore,
    BackupStoreError,
    ChecksumMismatch,
    ObjectMissing,
    UnsafeKey,
    capture_key,
    output_key,
    recording_prefix,
)
from shared.backupstore.base import b64_crc32, composite_crc32
from shared.backupstore.blocking import BlockingRead

TEN_A, TEN_B = "ten_" + "a" * 16, "ten_" + "b" * 16
REC_1, REC_2 = "rec_" + "1" * 24, "rec_" + "2" * 24
KEY = capture_key(TEN_A, REC_1, "alice", "audio", 1)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def local_file(tmp_path: Path, data: bytes, name: str = "src.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


async def test_is_a_backup_store_and_usable(store: BackupStore) -> None:
    assert isinstance(store, BackupStore)
    await store.check()
    assert store.url.startswith(("file:///", "s3://"))


async def test_put_stat_read(store: BackupStore, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    obj = await store.put_file(KEY, local_file(tmp_path, data), sha256=sha(data))
    assert (obj.key, obj.size, obj.sha256, obj.crc32) == (
        KEY,
        len(data),
        sha(data),
        b64_crc32(crc32(data)),
    )
    assert await store.stat(KEY) == obj
    assert await store.read_bytes(KEY) == data
    assert b"".join([c async for c in store.open_read(KEY)]) == data
    # A second put replaces the object.
    newer = b"newer"
    await store.put_bytes(KEY, newer)
    assert await store.read_bytes(KEY) == newer
    assert (await store.stat(KEY)).sha256 == sha(newer)  # type: ignore[union-attr]


async def test_range_reads_resume_and_missing_objects(store: BackupStore) -> None:
    data = os.urandom(70_000)
    await store.put_bytes(KEY, data, sha256=sha(data))
    for start in (1, 65_536, len(data) - 1):
        assert b"".join([c async for c in store.open_read(KEY, start=start)]) == data[start:]
    assert [c async for c in store.open_read(KEY, start=len(data))] == []
    with pytest.raises(BackupStoreError):
        _ = [c async for c in store.open_read(KEY, start=len(data) + 1)]
    missing = output_key(TEN_A, REC_1, "nothing.webm")
    assert await store.stat(missing) is None
    with pytest.raises(ObjectMissing):
        await store.read_bytes(missing)
    with pytest.raises(ObjectMissing):
        _ = [c async for c in store.open_read(missing, start=10)]
    await store.delete(missing)  # not an error: deletes are retried


async def test_blocking_reads_into_buffers_from_any_byte(store: BackupStore) -> None:
    """``open_blocking``: what a worker thread reads into its own buffers, as ``open_read``."""
    data = os.urandom(70_000)
    await store.put_bytes(KEY, data, sha256=sha(data))

    def drain(fh: BlockingRead) -> bytes:
        out, buf = bytearray(), bytearray(8192)
        try:
            while got := fh.readinto(memoryview(buf)):
                out += buf[:got]
        finally:
            fh.close()
        return bytes(out)

    for start in (0, 1, 65_536, len(data) - 1, len(data)):
        opened = await store.open_blocking(KEY, start=start)
        assert await asyncio.to_thread(drain, opened) == data[start:]
    with pytest.raises(BackupStoreError):
        await store.open_blocking(KEY, start=len(data) + 1)
    with pytest.raises(ObjectMissing):
        await store.open_blocking(output_key(TEN_A, REC_1, "nothing.webm"))


async def test_list_and_delete_prefix_by_folder(store: BackupStore) -> None:
    rec1, rec2 = recording_prefix(TEN_A, REC_1), recording_prefix(TEN_A, REC_2)
    keys = [capture_key(TEN_A, REC_1, "alice", "video", n) for n in range(1, 6)]
    keys += [output_key(TEN_A, REC_1, "call.webm"), output_key(TEN_A, REC_2, "call.webm")]
    keys += ["sibling/abc/x.bin", "sibling/abcd/y.bin"]
    for n, key in enumerate(keys):
        await store.put_bytes(key, b"x" * n)
    assert [o.key for o in await store.list(rec1)] == sorted(keys[:6])
    assert [o.size for o in await store.list(rec1 + "/output/")] == [5]
    assert [o.key for o in await store.list("")] == sorted(keys)
    assert [o.key for o in await store.list("sibling/abc")] == ["sibling/abc/x.bin"]
    assert await store.list(f"{TEN_A}/rec_nothing") == []

    assert await store.delete_prefix(rec1) == 6
    assert await store.list(rec1) == []
    assert [o.key for o in await store.list(TEN_A)] == [keys[6]]
    assert [o.key for o in await store.list(rec2)] == [keys[6]]
    assert await store.delete_prefix("sibling/abc") == 1
    assert [o.key for o in await store.list("sibling")] == ["sibling/abcd/y.bin"]
    assert await store.delete_prefix(rec1) == 0
    with pytest.raises(UnsafeKey):
        await store.delete_prefix("")
    await store.delete(keys[6])
    assert await store.stat(keys[6]) is None


async def test_multipart_file(store: BackupStore, tmp_path: Path) -> None:
    data = os.urandom(MIN_PART_SIZE + 123_457)
    key = output_key(TEN_A, REC_1, "call.mkv")
    obj = await store.put_file(key, local_file(tmp_path, data), sha256=sha(data))
    parts = [crc32(data[:MIN_PART_SIZE]), crc32(data[MIN_PART_SIZE:])]
    # One CRC-32 on a folder; the composite of the parts' on S3 (what the store validated).
    assert obj.crc32 in (b64_crc32(crc32(data)), composite_crc32(parts))
    assert (obj.size, obj.sha256) == (len(data), sha(data))
    assert sha(await store.read_bytes(key)) == sha(data)
    start = MIN_PART_SIZE - 10
    assert b"".join([c async for c in store.open_read(key, start=start)]) == data[start:]


@pytest.mark.parametrize("size", [1000, MIN_PART_SIZE + 1000], ids=["single", "multipart"])
async def test_sha256_mismatch_leaves_nothing_visible(
    store: BackupStore, tmp_path: Path, size: int
) -> None:
    data = os.urandom(size)
    path = local_file(tmp_path, data)
    wrong = sha(data + b"!")
    with pytest.raises(ChecksumMismatch) as caught:
        await store.put_file(KEY, path, sha256=wrong)
    assert not caught.value.transient  # the file is wrong: sending it again cannot help
    assert await store.stat(KEY) is None
    assert await store.list("") == []
    # Over an older object: the older one stays.
    await store.put_bytes(KEY, b"old")
    with pytest.raises(ChecksumMismatch):
        await store.put_file(KEY, path, sha256=wrong)
    assert await store.read_bytes(KEY) == b"old"
    assert [o.key for o in await store.list("")] == [KEY]
    with pytest.raises(ChecksumMismatch):
        await store.put_bytes(KEY, b"new", sha256=sha(b"other"))
    assert await store.read_bytes(KEY) == b"old"


async def test_wrong_crc32_is_refused_by_the_store(store: BackupStore) -> None:
    data = b"a capture segment" * 100
    with pytest.raises(ChecksumMismatch):
        await store.put_bytes(KEY, data, crc32=crc32(data) ^ 1)
    assert await store.stat(KEY) is None
    assert await store.list("") == []


BAD_KEYS = [
    "",
    "/etc/passwd",
    "../x",
    "a/../../b",
    "a//b",
    "a/./b",
    ".hidden",
    "a/.meta",
    "a/b/",
    "a\x00b",
    "a b",
    "a\\b",
    "caf\u00e9",
    "x" * 300,
]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_unsafe_keys_are_refused(store: BackupStore, key: str) -> None:
    with pytest.raises(UnsafeKey):
        await store.put_bytes(key, b"x")
    with pytest.raises(UnsafeKey):
        await store.stat(key)
    with pytest.raises(UnsafeKey):
        await store.read_bytes(key)
    with pytest.raises(UnsafeKey):
        await store.delete(key)
    if key not in ("", "a/b/"):  # the whole backup, and a folder with its slash, are prefixes
        with pytest.raises(UnsafeKey):
            await store.list(key)
        with pytest.raises(UnsafeKey):
            await store.delete_prefix(key)
    assert issubclass(UnsafeKey, ValueError)


async def test_usage_by_tenant(store: BackupStore) -> None:
    assert await store.usage_by_tenant() == {}
    await store.put_bytes(capture_key(TEN_A, REC_1, "alice", "audio", 1), b"1" * 10)
    await store.put_bytes(output_key(TEN_A, REC_2, "call.webm"), b"2" * 20)
    await store.put_bytes(output_key(TEN_B, REC_1, "call.webm"), b"3" * 5)
    assert await store.usage_by_tenant() == {TEN_A: 30, TEN_B: 5}
