"""The API's side of the vault's webhook contracts (``shared.webhook_rpc``).

Requests go through the destinations' ``VaultClient`` (same connection, same error mapping, the
same cached public key): a ``Problem`` in a reply becomes an ``ApiError`` with its status, message
and field. The API never asks for ``rpc.vault.webhooks.secrets`` or ``.disable``: its NATS user
may not.
"""

from __future__ import annotations

from shared import webhook_rpc as rpc

from .errors import ApiError
from .vault import VaultClient


def not_found() -> ApiError:
    return ApiError(
        404,
        "No webhook endpoint with this id for your tenant; list them with "
        "`resguardo webhooks list`.",
        "endpoint_id",
    )


class WebhookVaultClient:
    def __init__(self, vault: VaultClient) -> None:
        self.vault = vault

    @property
    def timeout(self) -> float:
        return self.vault.timeout

    @staticmethod
    def _view(reply: rpc.WebhookReply, field: str) -> rpc.WebhookView:
        problem = reply.problem
        if problem is not None:
            if problem.status == 404 and problem.field in ("", "endpoint_id"):
                raise not_found()
            raise ApiError(problem.status, problem.message, problem.field or field)
        if reply.endpoint is None:
            raise ApiError(502, "The credential vault sent an empty reply; retry.")
        return reply.endpoint

    async def create(self, request: rpc.WebhookCreate) -> rpc.WebhookView:
        reply = await self.vault.request(
            rpc.SUBJECT_CREATE, request, rpc.WebhookReply, self.timeout
        )
        return self._view(reply, "")

    async def list(self, tenant_id: str) -> list[rpc.WebhookView]:
        query = rpc.WebhookQuery(tenant_id=tenant_id)
        reply = await self.vault.request(
            rpc.SUBJECT_LIST, query, rpc.WebhookListReply, self.timeout
        )
        # The vault filters by tenant; checked again here all the same.
        return [e for e in reply.endpoints if e.tenant_id == tenant_id]

    async def get(self, tenant_id: str, endpoint_id: str) -> rpc.WebhookView:
        query = rpc.WebhookQuery(tenant_id=tenant_id, endpoint_id=endpoint_id)
        reply = await self.vault.request(rpc.SUBJECT_GET, query, rpc.WebhookReply, self.timeout)
        view = self._view(reply, "endpoint_id")
        if view.tenant_id != tenant_id:
            raise not_found()
        return view

    async def remove(self, tenant_id: str, endpoint_id: str) -> rpc.WebhookView:
        query = rpc.WebhookQuery(tenant_id=tenant_id, endpoint_id=endpoint_id)
        reply = await self.vault.request(rpc.SUBJECT_REMOVE, query, rpc.WebhookReply, self.timeout)
        return self._view(reply, "endpoint_id")

    async def rotate(self, request: rpc.WebhookRotate) -> rpc.WebhookView:
        reply = await self.vault.request(
            rpc.SUBJECT_ROTATE, request, rpc.WebhookReply, self.timeout
        )
        return self._view(reply, "endpoint_id")
