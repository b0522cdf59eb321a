"""Deleting a recording's backup folder once its upload is confirmed (idempotent)."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import msgspec
import nats.errors
from nats.aio.client import Client as NATS

from shared.backup import recording_dir
from shared.natsio import Retry
from shared.vault_rpc import SUBJECT_GET, DestinationQuery, DestinationReply

from .config import UploaderConfig
from .grant import REQUESTER

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Purged:
    bytes_freed: int
    files: int


def purge_recording(root: Path, tenant_id: str, recording_id: str) -> Purged:
    """Delete ``<root>/<tenant>/<rid>/`` (capture and output). A folder already gone is a no-op
    that reports zero."""
    folder = recording_dir(root, tenant_id, recording_id)
    if not folder.exists():
        return Purged(0, 0)
    total = files = 0
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            try:
                total += (Path(dirpath) / name).lstat().st_size
                files += 1
            except FileNotFoundError:
                pass
    shutil.rmtree(folder)
    return Purged(total, files)


async def persists(nc: NATS, cfg: UploaderConfig, tenant_id: str, destination_id: str) -> bool:
    """The destination's persist_backup, from its public view (no grant needed)."""
    query = DestinationQuery(tenant_id=tenant_id, destination_id=destination_id)
    try:
        msg = await nc.request(
            SUBJECT_GET,
            msgspec.json.encode(query),
            timeout=cfg.upload_grant_timeout_s,
            headers=REQUESTER,
        )
        reply = msgspec.json.decode(msg.data, type=DestinationReply)
    except (
        nats.errors.TimeoutError,
        nats.errors.NoRespondersError,
        msgspec.ValidationError,
        msgspec.DecodeError,
    ):
        raise Retry("the credential vault did not answer; purge later", delay=5) from None
    if reply.destination is None:
        # Deleted destination: we cannot know its choice; keeping the backup is the safe one.
        log.warning(
            "destination gone; backup kept",
            extra={"tenant_id": tenant_id, "destination_id": destination_id},
        )
        return True
    return reply.destination.config.get("persist_backup") is True
