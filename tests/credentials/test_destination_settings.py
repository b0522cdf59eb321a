"""A destination's non-secret settings change in place (what an operator may do); its secret
is neither read nor changed, and secret fields cannot be changed that way."""

from __future__ import annotations

import asyncpg
from nats.js import JetStreamContext

from shared.ids import new_tenant_id
from shared.vault_rpc import SUBJECT_UPDATE, DestinationReply, DestinationUpdate

from .helpers import VaultClient, rpc
from .test_key_admin import granted_secret

CANARY = "CANARY-settings-7f3a"


async def test_settings_change_in_place_and_secrets_cannot(
    client: VaultClient, js: JetStreamContext, database_url: str
) -> None:
    tenant = new_tenant_id()
    config = {"bucket": "old-bucket", "access_key_id": "AKIDSET", "secret_access_key": CANARY}
    created = await client.create(tenant, "archive", "s3", config)
    assert created.destination is not None, created.problem
    conn = await asyncpg.connect(database_url)
    try:
        before = await conn.fetchrow("SELECT ciphertext, wrapped_key FROM vault.destinations")

        async def update(changes: dict[str, object]) -> DestinationReply:
            req = DestinationUpdate(tenant_id=tenant, name="archive", config=changes)
            return await rpc(client.nc, SUBJECT_UPDATE, req, DestinationReply)

        changed = await update({"bucket": "new-bucket", "region": "eu-west-1"})
        assert changed.destination is not None, changed.problem
        assert changed.destination.config["bucket"] == "new-bucket"
        assert changed.destination.config["region"] == "eu-west-1"
        assert changed.destination.fingerprint == created.destination.fingerprint
        after = await conn.fetchrow("SELECT ciphertext, wrapped_key FROM vault.destinations")
        assert after == before  # the secret is untouched
        # An upload's grant carries the new settings and the same secret.
        granted = await granted_secret(client, js, tenant, created.destination.destination_id)
        assert granted["secret_access_key"] == CANARY
        removed = await update({"region": None})
        assert removed.destination is not None and "region" not in removed.destination.config

        for changes, field in (
            ({"secret_access_key": "x"}, "config.secret_access_key"),
            ({"colour": "blue"}, "config.colour"),
            ({"persist_backup": "yes"}, "config.persist_backup"),
            ({"bucket": None}, "config.bucket"),
        ):
            refused = await update(changes)
            assert refused.problem is not None and refused.problem.status == 422, changes
            assert refused.problem.field == field, refused.problem
        missing = await rpc(
            client.nc,
            SUBJECT_UPDATE,
            DestinationUpdate(tenant_id=tenant, name="nope", config={"bucket": "b"}),
            DestinationReply,
        )
        assert missing.problem is not None and missing.problem.status == 404
    finally:
        await conn.close()
