"""Vault request/reply contracts added for destination tests (issue 3), beside
``shared.vault_rpc`` (which should absorb them: see the lead's note).

    rpc.vault.destinations.test   DestinationQuery -> ProbeReply   (API only)
"""

from __future__ import annotations

import msgspec

from shared.vault_rpc import DestinationView, Problem

SUBJECT_TEST = "rpc.vault.destinations.test"


class ProbeReport(msgspec.Struct, frozen=True, kw_only=True):
    """What the probe wrote, confirmed and deleted (never a secret)."""

    key: str
    checksum_algorithm: str
    checksum: str
    deleted: bool = True  # False: the storage adapter cannot delete yet; the object is still there


class ProbeReply(msgspec.Struct, frozen=True, kw_only=True):
    destination: DestinationView | None = None
    probe: ProbeReport | None = None
    problem: Problem | None = None
