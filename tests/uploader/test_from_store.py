"""The uploader reads sealed files straight from the backup store (SeaweedFS, and the local
folder), in one pass, and picks a broken stream up again with a range read.

Real servers only: SeaweedFS as the backup store (behind a TCP proxy that can cut connections),
moto as the destination."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.uploader.backupcrypt import Crypt
from services.uploader.errors import LocalIntegrityError, TransientUploadError
from services.uploader.resume import ResumeStore, detached
from services.uploader.s3 import S3Backend
from services.uploader.source import Buffers, StoreReader, StoreSource
from shared import chunkcrypt
from shared.backupstore import BackupStore
from shared.backupstore.config import from_url
from shared.events.transcodes import SealedFile

from ..seaweed import SeaweedS3, seaweed_s3
from ..servers import MotoS3
from .proxy import Proxy

MIB = 1 << 20
PART = 5 * MIB


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    with seaweed_s3(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture
def proxy(seaweed: SeaweedS3) -> Iterator[Proxy]:
    port = int(seaweed.endpoint.rsplit(":", 1)[1])
    p = Proxy(port, mode="raw").start()
    yield p
    p.stop()


def _s3_store(seaweed: SeaweedS3, tmp_path: Path, endpoint: str) -> BackupStore:
    bucket = seaweed.new_bucket(f"up-{secrets.token_hex(4)}")
    secret = tmp_path / f"secret-{secrets.token_hex(3)}"
    secret.write_text(seaweed.secret_access_key)
    secret.chmod(0o600)
    return from_url(
        f"s3://{bucket}/backup",
        endpoint=endpoint,
        region=seaweed.region,
        access_key_id=seaweed.access_key_id,
        secret_access_key_file=secret,
    )


@pytest.fixture(params=["local", "seaweed"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, seaweed: SeaweedS3
) -> AsyncIterator[BackupStore]:
    if request.param == "local":
        built = from_url((tmp_path / "backup").as_uri())
    else:
        built = _s3_store(seaweed, tmp_path, seaweed.endpoint)
    yield built
    await built.close()


DATA_KEY = bytearray(secrets.token_bytes(32))


def crypt_of(key: str) -> Crypt:
    """How the uploader opens ``<tenant>/<recording>/<folder>/<file>``: bound to its id and name."""
    _, rid, folder, name = key.split("/")
    return Crypt(DATA_KEY, rid, f"{folder}/{name}")


async def _stored(
    store: BackupStore, tmp_path: Path, size: int, key: str, *, encrypted: bool = False
) -> SealedFile:
    data = os.urandom(size)
    path = tmp_path / f"src-{secrets.token_hex(3)}"
    path.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    if encrypted:  # as the transcoder stores it
        c = crypt_of(key)
        sealed_path = path.with_name(path.name + ".enc")
        chunkcrypt.encrypt_file(path, sealed_path, c.key, recording_id=c.recording_id, name=c.name)
        on_disk = hashlib.sha256(sealed_path.read_bytes()).hexdigest()
        await store.put_file(key, sealed_path, sha256=on_disk)
    else:
        await store.put_file(key, path, sha256=sha)
    return SealedFile(
        name=key.rsplit("/", 1)[1],
        role="media",
        size=size,
        sha256=sha,
        crc32=0,
        content_type="video/webm",
    )


async def test_chunks_are_exact_and_verified(store: BackupStore, tmp_path: Path) -> None:
    size = 2 * PART + 12345
    sealed = await _stored(store, tmp_path, size, "ten_a/rec_1/output-1/a.webm")
    source = StoreSource(store, "ten_a/rec_1/output-1/a.webm", sealed)
    await source.check()
    reader = source.reader(PART)
    buffers = Buffers(PART, 2)
    sizes, sha = [], hashlib.sha256()
    async for chunk, n in reader.chunks_into(buffers, len):
        sizes.append(n)
        sha.update(chunk)
        buffers.give(chunk.obj)
    reader.verify()
    assert sizes == [PART, PART, 12345]
    assert sha.hexdigest() == sealed.sha256
    again = source.reader(MIB)  # a fresh pass, bytes this time
    joined = b"".join([data async for data in again.chunks()])
    again.verify()
    assert hashlib.sha256(joined).hexdigest() == sealed.sha256


async def test_missing_changed_or_longer_objects_are_never_sent_as_good(
    store: BackupStore, tmp_path: Path
) -> None:
    key = "ten_a/rec_2/output-1/b.webm"
    sealed = await _stored(store, tmp_path, 3 * MIB, key)
    with pytest.raises(LocalIntegrityError, match="missing"):
        await StoreSource(store, "ten_a/rec_2/output-1/none.webm", sealed).check()
    await store.put_bytes(key, os.urandom(3 * MIB))  # same size, other bytes, their own SHA
    with pytest.raises(LocalIntegrityError, match="SHA-256"):
        await StoreSource(store, key, sealed).check()
    reader = StoreSource(store, key, sealed).reader(MIB)  # without the check: the read fails
    async for _ in reader.chunks():
        pass
    with pytest.raises(LocalIntegrityError):
        reader.verify()
    await store.put_bytes(key, os.urandom(3 * MIB + 1))
    with pytest.raises(LocalIntegrityError, match="sealed at"):
        await StoreSource(store, key, sealed).check()
    longer = StoreSource(store, key, sealed).reader(MIB)
    chunks = [c async for c in longer.chunks()]
    assert sum(map(len, chunks)) >= 3 * MIB  # ... and the extra byte is counted, not dropped
    with pytest.raises(LocalIntegrityError):
        longer.verify()


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "before-encryption"])
async def test_a_broken_stream_resumes_with_a_range_read(
    seaweed: SeaweedS3, proxy: Proxy, tmp_path: Path, s3_server: MotoS3, encrypted: bool
) -> None:
    store = _s3_store(seaweed, tmp_path, proxy.url)
    key = "ten_a/rec_3/output-1/c.webm"
    crypt = crypt_of(key) if encrypted else None
    try:
        sealed = await _stored(store, tmp_path, 48 * MIB, key, encrypted=encrypted)
        reader = StoreReader(store, key, sealed, PART, crypt)
        buffers = Buffers(PART, 2)
        sha, cut = hashlib.sha256(), False
        async for chunk, _ in reader.chunks_into(buffers, len):
            sha.update(chunk)
            buffers.give(chunk.obj)
            if not cut:  # after the first part: every connection to the store is reset
                cut = True
                await asyncio.to_thread(proxy.set_down, True)
                await asyncio.sleep(0.3)
                await asyncio.to_thread(proxy.set_down, False)
        reader.verify()
        assert sha.hexdigest() == sealed.sha256
        assert reader.resumed >= 1

        # The same, through a real adapter: a multipart upload to S3 fed from the store.
        bucket = f"dst-{secrets.token_hex(4)}"
        s3_server.client().create_bucket(Bucket=bucket)
        backend = S3Backend(
            {"bucket": bucket, "endpoint_url": s3_server.url, "path_style": True},
            {"access_key_id": s3_server.access_key, "secret_access_key": s3_server.secret_key},
            part_size=PART,
        )
        try:
            remote = await backend.upload(
                StoreSource(store, key, sealed, crypt), "k/c.webm", sealed, detached(sealed)
            )
        finally:
            await backend.close()
        body = s3_server.client().get_object(Bucket=bucket, Key="k/c.webm")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == sealed.sha256 == remote.sha256
    finally:
        await store.close()


async def test_an_encrypted_object_changed_in_the_store_is_never_sent(
    store: BackupStore, tmp_path: Path
) -> None:
    """Staff with write access to the store: a flipped byte, a cut, a chunk dropped, another
    file's ciphertext put in its place. Each read fails before the bad bytes are handed on."""
    key, other = "ten_a/rec_6/output-1/f.webm", "ten_a/rec_6/output-1/g.webm"
    sealed = await _stored(store, tmp_path, 3 * MIB + 7, key, encrypted=True)
    await _stored(store, tmp_path, 3 * MIB + 7, other, encrypted=True)
    good = await store.read_bytes(key)
    assert b"".join(
        [d async for d in StoreSource(store, key, sealed, crypt_of(key)).reader(MIB).chunks()]
    )
    step = chunkcrypt.DEFAULT_CHUNK_SIZE + chunkcrypt.TAG_SIZE
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x01
    dropped = good[: chunkcrypt.HEADER_SIZE] + good[chunkcrypt.HEADER_SIZE + step :]
    for bad in (bytes(flipped), good[:-100], dropped, await store.read_bytes(other)):
        await store.put_bytes(key, bad)
        source = StoreSource(store, key, sealed, crypt_of(key))
        with pytest.raises(LocalIntegrityError):
            await source.check()  # a wrong size is refused before any byte is read...
            reader = source.reader(MIB)  # ...and the same size with other bytes while reading
            async for _ in reader.chunks():
                pass
            reader.verify()


async def test_a_store_that_stays_down_is_a_transient_failure(
    seaweed: SeaweedS3, proxy: Proxy, tmp_path: Path
) -> None:
    store = _s3_store(seaweed, tmp_path, proxy.url)
    key = "ten_a/rec_4/output-1/d.webm"
    try:
        sealed = await _stored(store, tmp_path, 12 * MIB, key)
        reader = StoreReader(store, key, sealed, PART)
        buffers = Buffers(PART, 3)
        with pytest.raises(TransientUploadError, match="backup store"):
            async for chunk, _ in reader.chunks_into(buffers, len):
                buffers.give(chunk.obj)
                await asyncio.to_thread(proxy.set_down, True)  # and it never comes back
    finally:
        await asyncio.to_thread(proxy.set_down, False)
        await store.close()


async def test_resume_state_lives_in_the_store(store: BackupStore, tmp_path: Path) -> None:
    """Another instance (a new ResumeStore on the same store) finds what the first one kept."""
    sealed = await _stored(store, tmp_path, 10, "ten_a/rec_5/output-1/e.webm")
    first = ResumeStore(None, store=store, key="ten_a/rec_5").slot("dst_1", "k/e.webm", sealed)
    await first.save("s3-multipart", {"upload_id": "u-1"})
    other = ResumeStore(None, store=store, key="ten_a/rec_5").slot("dst_1", "k/e.webm", sealed)
    assert await other.load("s3-multipart") == {"upload_id": "u-1"}
    assert await store.stat("ten_a/rec_5/upload-state.json") is not None
    await other.clear()
    assert await store.stat("ten_a/rec_5/upload-state.json") is None  # the purge finds nothing
