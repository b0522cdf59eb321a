"""Asking the vault for one job's credentials, sealed to a key made for that job alone.

What Python cannot guarantee: the grant's plaintext is kept in a ``bytearray`` that ``wipe``
overwrites, but ``sealedbox.open_sealed`` returns immutable ``bytes``, the decoded secret values
are immutable ``str``s, and the S3 client keeps its own copies; those live until the garbage
collector reuses their memory. Wiping shortens the secret's life in this process; it cannot
prove it is gone.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import nats.errors
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from nats.aio.client import Client as NATS

from shared import sealedbox
from shared.vault_rpc import SUBJECT_GRANT, Grant, GrantReply, GrantRequest, grant_context

from .errors import PermanentUploadError, TransientUploadError

REQUESTER = {"Resguardo-Service": "uploader"}


@dataclass
class GrantMaterial:
    grant: Grant
    _plain: bytearray

    def wipe(self) -> None:
        self._plain[:] = bytes(len(self._plain))
        self.grant.secret.clear()


async def request_grant(
    nc: NATS,
    *,
    job_id: str,
    recording_id: str,
    tenant_id: str,
    destination_id: str,
    timeout: float,
    probe: bool = False,
) -> GrantMaterial:
    """One job's grant: an upload's, or with ``probe`` a destination test's (``probe.py``)."""
    key = X25519PrivateKey.generate()  # this job's key: it opens this grant and nothing else
    req = GrantRequest(
        job_id=job_id,
        recording_id=recording_id,
        tenant_id=tenant_id,
        destination_id=destination_id,
        public_key=sealedbox.public_bytes(key),
        probe=probe,
    )
    try:
        msg = await nc.request(
            SUBJECT_GRANT, msgspec.json.encode(req), timeout=timeout, headers=REQUESTER
        )
        reply = msgspec.json.decode(msg.data, type=GrantReply)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
        raise TransientUploadError(
            "the credential vault did not answer the grant request; it will be retried"
        ) from None
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise TransientUploadError(
            "the credential vault sent an unreadable grant reply; check that the vault and "
            "uploader versions match"
        ) from None
    if reply.problem is not None:
        text = f"the credential vault refused credentials for job {job_id}: {reply.problem.message}"
        # 409: this job was granted before (a retry of a crashed attempt): a new attempt helps.
        if reply.problem.status >= 500 or reply.problem.status == 409:
            raise TransientUploadError(text)
        raise PermanentUploadError(text)
    try:
        plain = bytearray(sealedbox.open_sealed(key, reply.sealed, grant_context(job_id)))
    except sealedbox.SealError:
        raise TransientUploadError(
            "the vault's grant could not be opened with this job's key; it will be retried"
        ) from None
    try:
        grant = msgspec.json.decode(plain, type=Grant)
    except (msgspec.ValidationError, msgspec.DecodeError):
        plain[:] = bytes(len(plain))
        raise TransientUploadError("the vault's grant is malformed; it will be retried") from None
    return GrantMaterial(grant=grant, _plain=plain)
