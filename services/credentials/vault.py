"""The vault's request handlers: destinations (create/list/get/delete/test) and one-shot grants
(``grants.py``, which ``Vault`` inherits). Destination tests are run by an uploader, never here
(``probes.py``): the vault talks to NATS and PostgreSQL only.

Each handler takes a decoded request and returns a reply struct; ``service.py`` does the NATS
wiring. Secrets are handled in ``bytearray``s that are overwritten once used.

What Python cannot guarantee: ``bytes`` and ``str`` are immutable, so copies we cannot overwrite
still exist — the plaintext that ``sealedbox.open_sealed`` returns when a config is created, the
``str`` values msgspec makes while validating it, and transient copies inside ``cryptography``,
the allocator and the garbage collector. Wiping the buffers we own shortens the secret's life in
memory; it does not prove it is gone. Keep the vault's host and core dumps protected accordingly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from nats.js import JetStreamContext

from shared import sealedbox
from shared.events import now
from shared.ids import TENANT_ID_RE, is_safe_name, new_destination_id
from shared.providers import FieldError, fields_of, split_config
from shared.vault_rpc import (
    SUBJECT_PUBLIC_KEY,
    DestinationCreate,
    DestinationListReply,
    DestinationQuery,
    DestinationReply,
    DestinationView,
    ProbeReply,
    ProbeReport,
    Problem,
    VaultKeyReply,
    create_context,
)

from . import aead, crypto, probes, store
from .facts import Facts
from .grants import Grants
from .keys import KeyRing
from .rows import RowCache

log = logging.getLogger(__name__)

ADD_FIX = 'fix it and add it again, or skip this test with --no-probe ("probe": false)'
TEST_FIX = "run the test again"


def view_of(row: store.DestinationRow) -> DestinationView:
    return DestinationView(
        destination_id=row.destination_id,
        tenant_id=row.tenant_id,
        name=row.name,
        provider=row.provider,
        config=row.public_config,
        secret_fields=row.secret_fields,
        fingerprint=row.fingerprint,
        created_at=row.created_at,
    )


def utf8_chars(buf: bytes | bytearray) -> int:
    """Characters in UTF-8 ``buf`` without decoding it (no immutable copy of a secret)."""
    return sum(1 for b in buf if b & 0xC0 != 0x80)


def check_tenant(tenant_id: str) -> Problem | None:
    if not TENANT_ID_RE.match(tenant_id):
        return Problem(status=422, message="tenant_id is not a valid tenant id", field="tenant_id")
    return None


@dataclass
class Vault(Grants):
    ring: KeyRing
    vault_key: X25519PrivateKey
    pool: asyncpg.Pool
    js: JetStreamContext
    max_credential_chars: int
    facts: Facts
    rows: RowCache
    probe_timeout_s: float = 20.0

    # -- destinations ---------------------------------------------------------------------------
    def public_key(self) -> VaultKeyReply:
        return VaultKeyReply(public_key=sealedbox.public_bytes(self.vault_key))

    async def create(self, req: DestinationCreate) -> DestinationReply:
        problem = check_tenant(req.tenant_id)
        if problem:
            return DestinationReply(problem=problem)
        if not is_safe_name(req.name):
            return _problem(
                422,
                "name must be 1 to 64 letters, digits, '-' or '_', starting with a letter or digit",
                "name",
            )
        try:
            fields_of(req.provider)
        except FieldError as exc:
            return _problem(422, str(exc), exc.field)
        try:
            plain = sealedbox.open_sealed(
                self.vault_key, req.sealed_config, create_context(req.tenant_id, req.name)
            )
        except sealedbox.SealError:
            return _problem(
                400,
                "sealed_config could not be opened; seal it to the vault's current public key "
                f"({SUBJECT_PUBLIC_KEY}) with create_context(tenant_id, name)",
                "sealed_config",
            )
        try:
            config: Any = msgspec.json.decode(plain)
        except msgspec.DecodeError:
            return _problem(422, "config must be a JSON object", "config")
        finally:
            del plain
        if not isinstance(config, dict):
            return _problem(422, "config must be a JSON object", "config")
        try:
            public, secret = split_config(req.provider, config)
        except FieldError as exc:
            return _problem(422, str(exc), exc.field)
        finally:
            config.clear()
        secret_json = bytearray()
        try:
            secret_fields = sorted(secret)
            secret_json = crypto.canonical_json(secret)
            chars = utf8_chars(secret_json)
            if chars > self.max_credential_chars:
                return _problem(
                    413,
                    f"the secret part of the config is {chars} characters; the vault stores at "
                    f"most {self.max_credential_chars} characters; raise "
                    "RESGUARDO_MAX_CREDENTIAL_CHARS to allow more",
                    "config",
                )
            if await store.get_destination(self.pool, req.tenant_id, name=req.name):
                return _duplicate(req.name)  # before probing: the probe may take seconds
            secret.clear()
            destination_id = new_destination_id()
            sealed = crypto.encrypt_secret(
                self.ring.current(), req.tenant_id, destination_id, secret_json
            )
        finally:
            secret.clear()
            aead.wipe(secret_json)
        row = store.DestinationRow(
            destination_id=destination_id,
            tenant_id=req.tenant_id,
            name=req.name,
            provider=req.provider,
            public_config=public,
            secret_fields=secret_fields,
            ciphertext=sealed.ciphertext,
            wrapped_key=sealed.wrapped_key,
            key_version=sealed.key_version,
            fingerprint=sealed.fingerprint,
            created_at=now(),
        )
        held = False
        try:
            if req.probe:
                # Tested before it is stored: pending (and out of every upload's reach) until an
                # uploader's test passed, then stored; else forgotten.
                await probes.sweep(self.pool)
                await probes.hold(self.pool, row, probes.expires_at(self.probe_timeout_s))
                held = True
                outcome = await probes.run(
                    self.js, self.facts, row, purpose=probes.ADD, timeout_s=self.probe_timeout_s
                )
                problem = probes.problem_of(outcome, timeout_s=self.probe_timeout_s, fix=ADD_FIX)
                if problem is not None:
                    log.warning(
                        "destination refused: probe failed",
                        extra={"tenant_id": req.tenant_id, "provider": req.provider},
                    )
                    return DestinationReply(problem=problem)
            saved = await store.insert_destination(self.pool, row)
        except store.DuplicateName:
            return _duplicate(req.name)
        finally:
            if held:
                await probes.release(self.pool, row.destination_id)
        log.info(
            "destination created",
            extra={
                "tenant_id": saved.tenant_id,
                "destination_id": saved.destination_id,
                "provider": saved.provider,
                "key_version": saved.key_version,
                "probed": req.probe,
            },
        )
        return DestinationReply(destination=view_of(saved))

    async def list(self, q: DestinationQuery) -> DestinationListReply | DestinationReply:
        problem = check_tenant(q.tenant_id)
        if problem:
            return DestinationReply(problem=problem)
        rows = await store.list_destinations(self.pool, q.tenant_id)
        return DestinationListReply(destinations=[view_of(r) for r in rows])

    async def get(self, q: DestinationQuery) -> DestinationReply:
        problem = _check_query(q)
        if problem:
            return DestinationReply(problem=problem)
        row = await store.get_destination(
            self.pool, q.tenant_id, destination_id=q.destination_id, name=q.name
        )
        if row is None:
            return _not_found(q)
        return DestinationReply(destination=view_of(row))

    async def delete(self, q: DestinationQuery) -> DestinationReply:
        problem = _check_query(q)
        if problem:
            return DestinationReply(problem=problem)
        row = await store.delete_destination(
            self.pool, q.tenant_id, destination_id=q.destination_id, name=q.name
        )
        if row is None:
            return _not_found(q)
        self.rows.forget(row.destination_id)  # the trigger tells every other vault too
        log.info(
            "destination deleted (its data key is gone with it)",
            extra={"tenant_id": row.tenant_id, "destination_id": row.destination_id},
        )
        return DestinationReply(destination=view_of(row))

    def _decrypt(self, row: store.DestinationRow) -> bytearray:
        """The row's secret JSON in a buffer the caller must wipe; raises on any failure."""
        return crypto.decrypt_secret(
            self.ring.current(),
            row.tenant_id,
            row.destination_id,
            row.ciphertext,
            row.wrapped_key,
            row.key_version,
        )

    async def test(self, q: DestinationQuery) -> ProbeReply:
        """Have an uploader test a stored destination with its stored credentials (``destinations
        test``): it gets them the way an upload does, as a one-shot grant."""
        problem = _check_query(q)
        if problem:
            return ProbeReply(problem=problem)
        row = await store.get_destination(
            self.pool, q.tenant_id, destination_id=q.destination_id, name=q.name
        )
        if row is None:
            return ProbeReply(problem=_not_found(q).problem)
        outcome = await probes.run(
            self.js, self.facts, row, purpose=probes.TEST, timeout_s=self.probe_timeout_s
        )
        ids = {"tenant_id": row.tenant_id, "destination_id": row.destination_id}
        problem = probes.problem_of(outcome, timeout_s=self.probe_timeout_s, fix=TEST_FIX)
        if problem is not None or outcome is None:
            log.warning("destination test failed", extra=ids)
            return ProbeReply(destination=view_of(row), problem=problem)
        log.info("destination tested", extra=ids)
        return ProbeReply(
            destination=view_of(row),
            probe=ProbeReport(
                key=outcome.key,
                checksum_algorithm=outcome.checksum_algorithm,
                checksum=outcome.checksum,
                deleted=outcome.deleted,
            ),
        )


def _duplicate(name: str) -> DestinationReply:
    return _problem(
        409,
        f"a destination named {name} already exists for this tenant; "
        "choose another name or delete that one first",
        "name",
    )


def _problem(status: int, message: str, field: str = "") -> DestinationReply:
    return DestinationReply(problem=Problem(status=status, message=message, field=field))


def _check_query(q: DestinationQuery) -> Problem | None:
    problem = check_tenant(q.tenant_id)
    if problem:
        return problem
    if not q.name and not q.destination_id:
        return Problem(status=422, message="give the destination's name or id", field="destination")
    return None


def _not_found(q: DestinationQuery) -> DestinationReply:
    which = q.destination_id or q.name
    return _problem(404, f"no destination {which} for this tenant", "destination")
