"""An endpoint's signing secret is a credential: encrypted at rest, handed to a notifier once per
sending job (sealed, audited), and found nowhere else: not in the database in clear, the logs,
or any stream."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from services.credentials import aead, crypto
from services.credentials.keys import load_master_keys
from services.credentials.webhook_store import aad_id
from shared import natsio, sealedbox
from shared.events import STREAMS
from shared.events import vault as vault_events
from shared.ids import new_recording_id, new_tenant_id
from shared.webhook_rpc import (
    SUBJECT_SECRETS,
    WebhookSecrets,
    WebhookSecretsReply,
    WebhookSecretsRequest,
    secrets_context,
)
from tests.credentials.helpers import publish_started, rpc
from tests.credentials.test_vault_rpc import dump_vault_tables

from .conftest import System
from .support import Receiver, create_endpoint, eventually, rotate_secret

DEST = "dst_0123456789abcdef"


async def _all_stream_bytes(system: System) -> bytes:
    out = bytearray()
    for spec in STREAMS:
        for _, event in await natsio.read_subject(system.js, spec, f"{spec.prefix}.>"):
            out += repr(event).encode()
    return bytes(out)


async def test_the_secret_appears_nowhere_but_in_its_ciphertext(system: System) -> None:
    tenant = new_tenant_id()
    receiver = await Receiver([]).start()
    try:
        endpoint, secret = await create_endpoint(system.nc, system.vault_key, tenant, receiver.url)
        receiver.secrets = [secret]
        rotated = await rotate_secret(system.nc, system.vault_key, endpoint)
        receiver.secrets = [secret, rotated]
        system.notifier()
        await publish_started(system.js, new_recording_id(), tenant, DEST)
        await eventually(lambda: receiver.received, 30, f"a delivery\n{system.logs()}")
        assert receiver.received[0].signatures == 2  # both secrets sign during the grace
        key_part = secret.removeprefix("whsec_")
        everything = (
            await dump_vault_tables(system.database_url)
            + system.logs()
            + system.vault.log_path.read_text()
            + (await _all_stream_bytes(system)).decode(errors="replace")
        )
        for value in (secret, rotated, key_part, rotated.removeprefix("whsec_")):
            assert value not in everything
        assert endpoint.endpoint_id in everything  # what was searched is real
        # The ciphertext opens with the master key, bound to its own endpoint and secret only.
        keys = load_master_keys("", system.tmp / "vault-data" / "keys" / "master.keys")
        conn = await asyncpg.connect(system.database_url)
        try:
            rows = await conn.fetch(
                "SELECT * FROM vault.webhook_secrets WHERE endpoint_id = $1 ORDER BY created_at",
                endpoint.endpoint_id,
            )
        finally:
            await conn.close()
        first, second = rows
        plain = crypto.decrypt_secret(
            keys,
            tenant,
            aad_id(endpoint.endpoint_id, first["secret_id"]),
            first["ciphertext"],
            first["wrapped_key"],
            first["key_version"],
        )
        assert bytes(plain) == secret.encode()
        with pytest.raises(aead.AeadError):  # moved to the other secret's place
            crypto.decrypt_secret(
                keys,
                tenant,
                aad_id(endpoint.endpoint_id, second["secret_id"]),
                first["ciphertext"],
                first["wrapped_key"],
                first["key_version"],
            )
    finally:
        await receiver.stop()


async def test_secrets_are_handed_once_per_job_sealed_and_audited(system: System) -> None:
    tenant = new_tenant_id()
    endpoint, secret = await create_endpoint(
        system.nc, system.vault_key, tenant, "https://hooks.example.com/in"
    )
    key = X25519PrivateKey.generate()
    request = WebhookSecretsRequest(
        tenant_id=tenant,
        endpoint_id=endpoint.endpoint_id,
        job_id="webhook-send-test-1",
        public_key=sealedbox.public_bytes(key),
    )
    reply = await rpc(system.nc, SUBJECT_SECRETS, request, WebhookSecretsReply)
    assert reply.problem is None
    plain = sealedbox.open_sealed(
        key, reply.sealed, secrets_context(endpoint.endpoint_id, request.job_id)
    )
    import msgspec

    assert msgspec.json.decode(plain, type=WebhookSecrets).secrets == [secret]
    with pytest.raises(sealedbox.SealError):  # bound to its job
        sealedbox.open_sealed(key, reply.sealed, secrets_context(endpoint.endpoint_id, "other"))
    again = await rpc(system.nc, SUBJECT_SECRETS, request, WebhookSecretsReply)
    assert again.problem is not None and again.problem.status == 409 and not again.sealed
    other_tenant = WebhookSecretsRequest(
        tenant_id=new_tenant_id(),
        endpoint_id=endpoint.endpoint_id,
        job_id="webhook-send-test-2",
        public_key=sealedbox.public_bytes(key),
    )
    refused = await rpc(system.nc, SUBJECT_SECRETS, other_tenant, WebhookSecretsReply)
    assert refused.problem is not None and refused.problem.status == 404
    await asyncio.sleep(0.2)
    audit = [
        e
        for _, e in await natsio.read_subject(
            system.js, vault_events.STREAM, f"vault.{endpoint.endpoint_id}.>"
        )
    ]
    kinds = [type(e).__name__ for e in audit]
    assert kinds.count("WebhookSecretIssued") == 1
    assert kinds.count("WebhookSecretRefused") == 1
    assert [e.change for e in audit if isinstance(e, vault_events.WebhookChanged)] == ["created"]
