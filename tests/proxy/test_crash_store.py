"""With the backup in an object store, kill -9 the proxy mid-capture and restart it: every
finished segment, and every one salvaged from the spool, is in the store with the SHA-256 its
event announced before that event was published; the local folder keeps no finished segment."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from resguardo.publisher import Publisher
from shared import chunkcrypt
from shared.backupstore.config import from_url
from shared.embedded import NatsServer
from shared.events import captures

from ..seaweed import SeaweedS3, seaweed_s3
from .conftest import (
    Proxy,
    history,
    make_proxy,
    recording_key,
    start_recording,
    stop_recording,
    wait_for_count,
)
from .conftest import wait_for_event as wait_for_capture_event


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    with seaweed_s3(tmp_path_factory.mktemp("weed")) as server:
        yield server


@pytest.fixture
async def store_proxy(
    tmp_path: Path, nats_server: NatsServer, weed: SeaweedS3
) -> AsyncIterator[tuple[Proxy, dict[str, str]]]:
    bucket = weed.new_bucket("proxy-spool")
    secret = tmp_path / "secret"
    secret.write_text(weed.secret_access_key)
    secret.chmod(0o600)
    settings = {
        "backup_url": f"s3://{bucket}",
        "backup_s3_endpoint": weed.endpoint,
        "backup_s3_access_key_id": weed.access_key_id,
        "backup_s3_secret_access_key_file": str(secret),
    }
    proxy = make_proxy(tmp_path, nats_server, **settings)
    await proxy.start()
    try:
        yield proxy, settings
    finally:
        proxy.process.stop()


async def test_kill_9_with_an_object_store_loses_nothing_finished(
    js: JetStreamContext, store_proxy: tuple[Proxy, dict[str, str]]
) -> None:
    proxy, settings = store_proxy
    store = from_url(
        settings["backup_url"],
        endpoint=settings["backup_s3_endpoint"],
        access_key_id=settings["backup_s3_access_key_id"],
        secret_access_key_file=Path(settings["backup_s3_secret_access_key_file"]),
    )
    rec = await start_recording(js)
    rec_dir = proxy.rec_dir(rec)
    pub = Publisher(proxy.whip_url(rec.rid), rec.token, participant="ana", ca_file=proxy.ca_file)
    await pub.start()
    try:
        await wait_for_count(js, rec.rid, captures.SegmentWritten, 4)
        await asyncio.sleep(0.6)
        proxy.process.kill()
        assert sorted(rec_dir.rglob("*.rgc.part")), "nothing was being written at the kill"
        await proxy.start()  # salvage puts what it recovers in the store, then publishes
    finally:
        await pub.stop()
    await stop_recording(js, rec)
    await wait_for_capture_event(js, f"captures.{rec.rid}.closed")

    segments = [e for e in await history(js, rec.rid) if isinstance(e, captures.SegmentWritten)]
    assert len(segments) >= 4
    prefix = f"{rec.tenant_id}/{rec.rid}"
    key = await recording_key(js, rec)
    try:
        for seg in segments:
            stored = await store.stat(f"{prefix}/{seg.path}")
            assert stored is not None, f"{seg.path} is not in the store"
            # Encrypted in the store: its plaintext is the one the event announced.
            blob = await store.read_bytes(f"{prefix}/{seg.path}")
            assert stored.size == len(blob) > seg.size
            plain = b"".join(
                chunkcrypt.decrypt_stream(
                    io.BytesIO(blob), key, recording_id=rec.rid, name=seg.path
                )
            )
            assert (hashlib.sha256(plain).hexdigest(), len(plain)) == (seg.sha256, seg.size)
        assert len(await store.list(prefix)) == len(segments)
    finally:
        await store.close()
    assert not list(rec_dir.rglob("*.rgc")), "finished segments stayed in the local spool"


class Killed(Exception):
    """Stands for the kill -9 that stops a start between its puts and its publishes."""


async def test_a_start_killed_between_put_and_publish_loses_no_segment(
    js: JetStreamContext, weed: SeaweedS3, tmp_path: Path
) -> None:
    """Salvage puts a recovered segment in the store, then publishes its event. A start killed
    in between must leave the local copy, so that the next start salvages it again (it never
    looks in the store): found in the 200-recording chaos run, where such a segment was lost."""
    from services.proxy.salvage import salvage
    from services.proxy.session import make_publish
    from shared.backupstore.spool import Spool
    from shared.recording_key import RecordingKey, fetch_recording_key

    from ..transcoder.capture_factory import ParticipantSpec, SessionSpec, make_capture

    # A recording the vault knows (started), its segments encrypted under the key it issued,
    # as the proxy writes them; salvage asks the vault for that key, as the proxy's start does.
    rec = await start_recording(js)
    spool_root = tmp_path / "spool"
    capture = make_capture(
        spool_root,
        [ParticipantSpec("ana", sessions=(SessionSpec(0.0, 4.0),))],
        segment_s=2.0,
        recording_id=rec.rid,
        tenant_id=rec.tenant_id,
        key=await recording_key(js, rec),
    )

    async def fetch_key(recording_id: str, tenant_id: str, purpose: str) -> RecordingKey:
        return await fetch_recording_key(
            js._nc, recording_id=recording_id, tenant_id=tenant_id, purpose=purpose, service="proxy"
        )

    bucket = weed.new_bucket("salvage-window")
    secret = tmp_path / "secret"
    secret.write_text(weed.secret_access_key)
    secret.chmod(0o600)
    store = from_url(
        f"s3://{bucket}",
        endpoint=weed.endpoint,
        access_key_id=weed.access_key_id,
        secret_access_key_file=secret,
    )
    spool = Spool(spool_root, store)
    publish = make_publish(js)

    async def killed_before_publishing(event: object) -> None:
        raise Killed

    try:
        with pytest.raises(Killed):
            await salvage(js, spool_root, killed_before_publishing, fetch_key, spool.keep)
        prefix = f"{capture.tenant_id}/{capture.recording_id}"
        assert len(await store.list(prefix)) == len(capture.segments)  # in the store, unnamed
        assert await salvage(js, spool_root, publish, fetch_key, spool.keep) > 0  # the next start
        written = [
            e
            for e in await history(js, capture.recording_id)
            if isinstance(e, captures.SegmentWritten)
        ]
        assert sorted(e.sha256 for e in written) == sorted(s.sha256 for s in capture.segments)
        rec_dir = spool_root / capture.tenant_id / capture.recording_id
        assert not list(rec_dir.rglob("*.rgc")), "the spool kept copies that are in the store"
        assert await salvage(js, spool_root, publish, fetch_key, spool.keep) == 0  # nothing twice
    finally:
        await store.close()
