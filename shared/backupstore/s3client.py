"""One S3 client for one bucket (and prefix): built lazily, credentials kept out of sight, every
call's failure mapped onto the backup store's errors."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.handlers import add_expect_header

from .s3errors import map_error

_session: AioSession | None = None


def _shared_session() -> AioSession:
    """One botocore session per process: each new one parses the S3 model again (~70 ms)."""
    global _session
    if _session is None:
        _session = get_session()
    return _session


class Bucket:
    def __init__(
        self,
        bucket: str,
        prefix: str,
        *,
        endpoint: str | None,
        region: str,
        access_key_id: str,
        secret_access_key: str,
        connect_timeout: float,
        read_timeout: float,
        attempts: int,
    ) -> None:
        self.name = bucket
        self.prefix = prefix
        self.where = f"the backup store at {endpoint or 'AWS S3'} (bucket {bucket})"
        config = AioConfig(
            region_name=region,
            # Self-hosted stores (SeaweedFS, MinIO) answer on one host name: path style.
            s3={"addressing_style": "path" if endpoint else "auto"},
            # Few attempts: callers (JetStream redelivery) retry with backoff of their own, and
            # an unreachable store must be reported in about a second, not after minutes.
            retries={"total_max_attempts": attempts, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            request_checksum_calculation="when_required",  # we send our own CRC-32
            response_checksum_validation="when_required",  # validated when we ask (GET)
        )

        # The secret lives in this closure and, once connected, in the SDK client: in no
        # attribute or repr of ours (a functools.partial would show it in its repr).
        def make_client() -> Any:
            return _shared_session().create_client(
                "s3",
                endpoint_url=endpoint,
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                config=config,
            )

        self._make_client = make_client
        self._cm: Any = None
        self._client: Any = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"Bucket({self.name!r}, prefix={self.prefix!r})"

    async def client(self) -> Any:
        async with self._lock:
            if self._client is None:
                self._cm = self._make_client()
                client = await self._cm.__aenter__()
                # "Expect: 100-continue" costs a round trip per put, and some servers never
                # answer it.
                client.meta.events.unregister("before-call.s3", add_expect_header)
                self._client = client
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            self._client = None
            with contextlib.suppress(Exception):
                await self._cm.__aexit__(None, None, None)

    def full(self, key: str) -> str:
        """The object name of ``key`` in the bucket."""
        return f"{self.prefix}/{key}" if self.prefix else key

    def rel(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    async def call(self, action: str, key: str, op: str, **args: Any) -> Any:
        """``client.<op>(Bucket=..., **args)``, its failure in our words (see ``s3errors``)."""
        client = await self.client()
        try:
            return await getattr(client, op)(Bucket=self.name, **args)
        except Exception as exc:
            raise map_error(exc, action=action, key=key, where=self.where) from None
