"""The API's side of the vault's request/reply contracts (``shared.vault_rpc``).

A ``Problem`` in a reply becomes an ``ApiError`` with the same status, message and field. The
public key is cached for a minute (a rotated key is picked up soon after).
"""

from __future__ import annotations

import time
from typing import Any, TypeVar

import msgspec
import nats.errors
from nats.aio.client import Client as NATS

from shared import vault_rpc as rpc

from .errors import ApiError, VaultUnavailable

R = TypeVar("R")

KEY_TTL_S = 60.0


class VaultClient:
    def __init__(self, nc: NATS, *, timeout: float = 5.0, create_timeout: float = 60.0) -> None:
        self.nc = nc
        self.timeout = timeout
        # A create may have an uploader probe the destination first (the vault waits for it).
        self.create_timeout = create_timeout
        self._key: bytes | None = None
        self._key_at = 0.0

    async def request(self, subject: str, payload: Any, reply: type[R], timeout: float) -> R:
        data = msgspec.json.encode(payload) if payload is not None else b""
        try:
            msg = await self.nc.request(subject, data, timeout=timeout)
        except (
            nats.errors.TimeoutError,
            nats.errors.NoRespondersError,
            nats.errors.ConnectionClosedError,
        ):
            raise VaultUnavailable() from None
        try:
            return msgspec.json.decode(msg.data, type=reply)
        except (msgspec.ValidationError, msgspec.DecodeError):
            raise ApiError(
                502,
                "The credential vault sent a reply the API cannot read; "
                "check that both run the same version.",
            ) from None

    async def public_key(self) -> bytes:
        now = time.monotonic()
        if self._key is None or now - self._key_at > KEY_TTL_S:
            reply = await self.request(
                rpc.SUBJECT_PUBLIC_KEY, None, rpc.VaultKeyReply, self.timeout
            )
            if len(reply.public_key) != 32:
                raise ApiError(502, "The credential vault sent a malformed public key.")
            self._key, self._key_at = reply.public_key, now
        return self._key

    def forget_key(self) -> None:
        self._key = None

    @staticmethod
    def _view(reply: rpc.DestinationReply, field: str) -> rpc.DestinationView:
        if reply.problem is not None:
            raise ApiError(
                reply.problem.status, reply.problem.message, reply.problem.field or field
            )
        if reply.destination is None:
            raise ApiError(502, "The credential vault sent an empty reply; retry.")
        return reply.destination

    async def create(self, request: rpc.DestinationCreate) -> rpc.DestinationView:
        reply = await self.request(
            rpc.SUBJECT_CREATE, request, rpc.DestinationReply, self.create_timeout
        )
        return self._view(reply, "")

    async def get(
        self, tenant_id: str, *, name: str = "", destination_id: str = ""
    ) -> rpc.DestinationView:
        query = rpc.DestinationQuery(tenant_id=tenant_id, name=name, destination_id=destination_id)
        reply = await self.request(rpc.SUBJECT_GET, query, rpc.DestinationReply, self.timeout)
        return self._view(reply, "name")

    async def list(self, tenant_id: str) -> list[rpc.DestinationView]:
        query = rpc.DestinationQuery(tenant_id=tenant_id)
        reply = await self.request(rpc.SUBJECT_LIST, query, rpc.DestinationListReply, self.timeout)
        return reply.destinations

    async def delete(self, tenant_id: str, name: str) -> rpc.DestinationView:
        query = rpc.DestinationQuery(tenant_id=tenant_id, name=name)
        reply = await self.request(rpc.SUBJECT_DELETE, query, rpc.DestinationReply, self.timeout)
        return self._view(reply, "name")

    async def test(self, tenant_id: str, name: str) -> rpc.ProbeReply:
        """Probe a stored destination (an uploader writes, confirms and deletes a test object, with
        a one-shot grant; the vault waits for its answer)."""
        query = rpc.DestinationQuery(tenant_id=tenant_id, name=name)
        reply = await self.request(rpc.SUBJECT_TEST, query, rpc.ProbeReply, self.create_timeout)
        problem = reply.problem
        if problem is not None and reply.destination is None:
            raise ApiError(problem.status, problem.message, problem.field or "name")
        return reply
