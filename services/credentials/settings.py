"""Changing a destination's non-secret settings (bucket, region, prefix, persist options) without
touching its secret: the ciphertext and its data key stay as they are, and the secret is never
decrypted. Rows are announced on change (the table's trigger), so every vault's cache drops them.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

from shared.providers import FieldError, fields_of, split_config
from shared.vault_rpc import DestinationReply, DestinationUpdate, Problem

from . import store
from .vault import view_of

log = logging.getLogger(__name__)

_UPDATE = """
    UPDATE vault.destinations SET public_config = $3
     WHERE tenant_id = $1 AND destination_id = $2
    RETURNING destination_id, tenant_id, name, provider, public_config, secret_fields,
              ciphertext, wrapped_key, key_version, fingerprint, created_at"""


def merged_settings(
    provider: str, current: dict[str, Any], changes: dict[str, Any]
) -> dict[str, Any]:
    """The new public config, or ``FieldError`` naming the field (unknown, secret or invalid)."""
    specs = {f.name: f for f in fields_of(provider)}
    for key in changes:
        spec = specs.get(key)
        if spec is None:
            raise FieldError(f"config.{key}", f"unknown field config.{key} for provider {provider}")
        if spec.secret:
            raise FieldError(
                f"config.{key}",
                f"config.{key} is a secret field: it cannot be changed in place; create the "
                "destination again with the new value",
            )
    merged = {**current, **{k: v for k, v in changes.items() if v is not None}}
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
    # Validate with the same rules as a create; secrets stand in for themselves, unread.
    stand_ins = {s.name: "set" for s in specs.values() if s.secret and s.required}
    public, _ = split_config(provider, {**merged, **stand_ins})
    return public


async def update(
    pool: asyncpg.Pool, req: DestinationUpdate, problem: Problem | None
) -> DestinationReply:
    if problem is not None:
        return DestinationReply(problem=problem)
    row = await store.get_destination(pool, req.tenant_id, name=req.name)
    if row is None:
        return DestinationReply(
            problem=Problem(
                status=404, message=f"no destination {req.name} for this tenant", field="name"
            )
        )
    try:
        public = merged_settings(row.provider, row.public_config, req.config)
    except FieldError as exc:
        return DestinationReply(problem=Problem(status=422, message=str(exc), field=exc.field))
    record = await pool.fetchrow(_UPDATE, row.tenant_id, row.destination_id, public)
    if record is None:  # deleted meanwhile
        return DestinationReply(
            problem=Problem(status=404, message=f"no destination {req.name} for this tenant")
        )
    log.info(
        "destination settings changed",
        extra={
            "tenant_id": row.tenant_id,
            "destination_id": row.destination_id,
            "fields": sorted(req.config),
        },
    )
    return DestinationReply(destination=view_of(store.row_of(record)))
