"""Recording data keys from a real vault (real NATS, real PostgreSQL): made on first request,
the same for every job of the recording, sealed per job, audited, refused when the log says no,
destroyed when the backup is purged, rewrapped by ``keys rewrap`` without changing."""

from __future__ import annotations

import asyncio
import io
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from services.credentials import admin
from shared import chunkcrypt, natsio, sealedbox
from shared.events import event_id
from shared.events import uploads as up_events
from shared.events import vault as vault_events
from shared.ids import new_recording_id, new_tenant_id
from shared.recording_key import RecordingKey, RecordingKeyError, fetch_recording_key
from shared.vault_rpc import (
    SUBJECT_RECORDING_KEY,
    RecordingKeyReply,
    RecordingKeyRequest,
    recording_key_context,
)
from tests.servers import ServiceProcess

from .helpers import VaultClient, publish_started, rpc


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert p is not None
    yield p
    await p.close()


async def started(js: JetStreamContext) -> tuple[str, str]:
    rid, tenant = new_recording_id(), new_tenant_id()
    await publish_started(js, rid, tenant, "dst_unused")
    return rid, tenant


async def key_of(nc: NATS, rid: str, tenant: str, purpose: str = "capture") -> RecordingKey:
    return await fetch_recording_key(
        nc, recording_id=rid, tenant_id=tenant, purpose=purpose, service="test", attempts=1
    )


async def vault_events_of(js: JetStreamContext, rid: str) -> list[object]:
    return [e for _, e in await natsio.read_subject(js, vault_events.STREAM, f"vault.{rid}.>")]


async def test_one_key_per_recording_sealed_per_job_and_audited(
    client: VaultClient,
    nc: NATS,
    js: JetStreamContext,
    pool: asyncpg.Pool,
    vault_proc: ServiceProcess,
) -> None:
    rid, tenant = await started(js)
    first = await key_of(nc, rid, tenant, "capture")
    again = await key_of(nc, rid, tenant, "transcode")
    other_rid, other_tenant = await started(js)
    other = await key_of(nc, other_rid, other_tenant)
    assert bytes(first.data_key) == bytes(again.data_key)
    assert len(first.data_key) == chunkcrypt.KEY_SIZE and any(first.data_key)
    assert bytes(other.data_key) != bytes(first.data_key)
    assert first.key_version == 1 and str(first.data_key.hex()) not in repr(first)

    # What one service encrypts, another opens: the key is the recording's, not the job's.
    out = io.BytesIO()
    with chunkcrypt.open_writer(out, first.data_key, recording_id=rid, name="a/b.rgc") as w:
        w.write(b"frames")
    out.seek(0)
    plain = b"".join(
        chunkcrypt.decrypt_stream(out, again.data_key, recording_id=rid, name="a/b.rgc")
    )
    assert plain == b"frames"

    audit = await vault_events_of(js, rid)
    issued = [e for e in audit if isinstance(e, vault_events.RecordingKeyIssued)]
    assert [(e.purpose, e.created, e.requester) for e in issued] == [
        ("capture", True, "test"),
        ("transcode", False, "test"),
    ]
    # The key is nowhere in clear: not in the audit trail, the vault's log or the database.
    key_hex, key_raw = first.data_key.hex(), bytes(first.data_key)
    raw_audit = b"".join(msgspec.json.encode(e) for e in audit) + vault_proc.log_path.read_bytes()
    assert key_raw not in raw_audit and key_hex.encode() not in raw_audit
    row = await pool.fetchrow(
        "SELECT tenant_id, wrapped_key, key_version FROM vault.recording_keys "
        "WHERE recording_id = $1",
        rid,
    )
    assert row is not None and row["tenant_id"] == tenant and row["key_version"] == 1
    assert key_raw not in bytes(row["wrapped_key"])

    first.wipe()
    assert not any(first._key)
    with pytest.raises(RuntimeError, match="wiped"):
        _ = first.data_key


async def test_refusals_name_the_reason_and_are_audited(
    client: VaultClient, nc: NATS, js: JetStreamContext
) -> None:
    rid, tenant = await started(js)
    never = new_recording_id()
    with pytest.raises(RecordingKeyError, match="never started") as unknown:
        await key_of(nc, never, tenant)
    assert unknown.value.status == 404 and not unknown.value.transient
    with pytest.raises(RecordingKeyError, match="does not belong") as wrong:
        await key_of(nc, rid, new_tenant_id())
    assert wrong.value.status == 403
    with pytest.raises(RecordingKeyError, match="purpose must be one of"):
        await key_of(nc, rid, tenant, purpose="curiosity")

    # The same job asking twice (a replayed request): the second is refused, 409.
    eph = X25519PrivateKey.generate()
    req = RecordingKeyRequest(
        recording_id=rid,
        tenant_id=tenant,
        job_id="capture:test:fixed",
        purpose="capture",
        public_key=sealedbox.public_bytes(eph),
    )
    ok = await rpc(nc, SUBJECT_RECORDING_KEY, req, RecordingKeyReply)
    assert ok.problem is None
    opened = sealedbox.open_sealed(eph, ok.sealed, recording_key_context(rid, req.job_id))
    assert len(opened) == chunkcrypt.KEY_SIZE
    # Sealed to the job: another job's context does not open it.
    with pytest.raises(sealedbox.SealError):
        sealedbox.open_sealed(eph, ok.sealed, recording_key_context(rid, "capture:test:other"))
    replay = await rpc(nc, SUBJECT_RECORDING_KEY, req, RecordingKeyReply)
    assert replay.problem is not None and replay.problem.status == 409

    refused = [
        e for e in await vault_events_of(js, rid) if isinstance(e, vault_events.RecordingKeyRefused)
    ]
    assert any("purpose must be" in e.reason for e in refused)
    assert any("already given" in e.reason for e in refused)


async def test_purge_destroys_the_key_for_good(
    client: VaultClient, nc: NATS, js: JetStreamContext, pool: asyncpg.Pool
) -> None:
    rid, tenant = await started(js)
    key = await key_of(nc, rid, tenant)
    # A copy of the backup taken before the purge: a file encrypted under the recording's key.
    copy = io.BytesIO()
    with chunkcrypt.open_writer(copy, key.data_key, recording_id=rid, name="capture/x.rgc") as w:
        w.write(secrets.token_bytes(1000))
    key.wipe()

    purged = up_events.BackupPurged(
        event_id=event_id(rid, "backup_purged"),
        recording_id=rid,
        tenant_id=tenant,
        occurred_at=datetime.now(UTC),
        job_id=f"{rid}:1",
        bytes_freed=1000,
        files=1,
    )
    await natsio.publish(js, purged)

    async def gone() -> bool:
        return not await pool.fetchval(
            "SELECT count(*) FROM vault.recording_keys WHERE recording_id = $1", rid
        )

    for _ in range(100):
        if await gone():
            break
        await asyncio.sleep(0.1)
    assert await gone()
    destroyed = [
        e
        for e in await vault_events_of(js, rid)
        if isinstance(e, vault_events.RecordingKeyDestroyed)
    ]
    assert [(e.existed, e.reason) for e in destroyed] == [(True, "backup purged")]

    # No one can have the key again: the log says purged, whatever the database would say.
    with pytest.raises(RecordingKeyError, match="purged") as refused:
        await key_of(nc, rid, tenant, purpose="upload")
    assert refused.value.status == 410
    assert await gone()  # and asking did not make a new key
    # The copy cannot be opened by anyone: a key made up now is not the recording's.
    copy.seek(0)
    with pytest.raises(chunkcrypt.TamperedError):
        chunkcrypt.verify_stream(
            copy, secrets.token_bytes(32), recording_id=rid, name="capture/x.rgc"
        )

    # A redelivered purge event changes nothing and writes no second audit entry.
    await natsio.publish(js, purged)
    await asyncio.sleep(0.5)
    again = [
        e
        for e in await vault_events_of(js, rid)
        if isinstance(e, vault_events.RecordingKeyDestroyed)
    ]
    assert len(again) == 1


async def test_rewrap_covers_recording_keys_without_changing_them(
    client: VaultClient, nc: NATS, js: JetStreamContext, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    source = admin.KeySource(
        env_value="", key_file=tmp_path / "vault-data" / "keys" / "master.keys"
    )
    rid, tenant = await started(js)
    before = await key_of(nc, rid, tenant)
    admin.rotate(source)
    with pytest.raises(admin.KeyAdminError, match="1 recording data key"):
        await admin.retire(pool, source, 1)
    result = await admin.rewrap(pool, source.load())
    assert result.ok and result.recordings.rewrapped >= 1, result
    assert result.recordings.by_version == {2: result.recordings.by_version[2]}
    after = await key_of(nc, rid, tenant, purpose="upload")
    assert after.key_version == 2 and bytes(after.data_key) == bytes(before.data_key)
    await admin.retire(pool, source, 1)
    still = await key_of(nc, rid, tenant, purpose="upload")
    assert bytes(still.data_key) == bytes(before.data_key)
