"""Master key rotation covers webhook signing secrets: retire refuses while one uses the old
version, rewrap moves them without decrypting any, and the vault still hands them out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from nats.aio.client import Client as NATS

from services.credentials import admin, crypto
from shared import sealedbox
from shared.ids import new_tenant_id
from shared.webhook_rpc import (
    SUBJECT_SECRETS,
    WebhookSecrets,
    WebhookSecretsReply,
    WebhookSecretsRequest,
    secrets_context,
)
from tests.notifier.support import create_endpoint
from tests.servers import ServiceProcess

from .helpers import VaultClient, rpc, wait_ready


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert p is not None
    yield p
    await p.close()


async def handed(nc: NATS, tenant: str, endpoint_id: str, job: str) -> list[str]:
    key = X25519PrivateKey.generate()
    request = WebhookSecretsRequest(
        tenant_id=tenant,
        endpoint_id=endpoint_id,
        job_id=job,
        public_key=sealedbox.public_bytes(key),
    )
    reply = await rpc(nc, SUBJECT_SECRETS, request, WebhookSecretsReply)
    assert reply.problem is None, reply.problem
    plain = sealedbox.open_sealed(key, reply.sealed, secrets_context(endpoint_id, job))
    return msgspec.json.decode(plain, type=WebhookSecrets).secrets


async def test_webhook_secrets_follow_a_master_key_rotation(
    client: VaultClient,
    nc: NATS,
    vault_proc: ServiceProcess,
    pool: asyncpg.Pool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = admin.KeySource(env_value="", key_file=tmp_path / "vault-data/keys/master.keys")
    vault_key = await wait_ready(nc, vault_proc)
    tenant = new_tenant_id()
    endpoint, secret = await create_endpoint(nc, vault_key, tenant, "https://hooks.example.com/")
    admin.rotate(source)
    with pytest.raises(admin.KeyAdminError, match="1 webhook secret"):
        await admin.retire(pool, source, 1)

    def no_secrets(*_a: object, **_k: object) -> bytearray:
        raise AssertionError("rewrap decrypted a secret")

    monkeypatch.setattr(crypto, "decrypt_secret", no_secrets)
    result = await admin.rewrap(pool, source.load())
    monkeypatch.undo()
    assert result.ok and result.webhook_secrets.rewrapped == 1
    assert result.webhook_secrets.by_version == {2: 1}
    assert await handed(nc, tenant, endpoint.endpoint_id, "job-1") == [secret]
    await admin.retire(pool, source, 1)
    assert await handed(nc, tenant, endpoint.endpoint_id, "job-2") == [secret]
    again = await admin.rewrap(pool, source.load())
    assert again.webhook_secrets.rewrapped == 0
