"""Identifiers and user-supplied names: generated here, validated everywhere they enter."""

from __future__ import annotations

import re
import secrets
import unicodedata

RECORDING_ID_RE = re.compile(r"^rec_[0-9a-f]{24}$")
TENANT_ID_RE = re.compile(r"^ten_[0-9a-f]{16}$")
DESTINATION_ID_RE = re.compile(r"^dst_[0-9a-f]{16}$")
WEBHOOK_ID_RE = re.compile(r"^wh_[0-9a-f]{16}$")
# Participant and destination names become path segments and NATS subject tokens:
# keep them to a boring alphabet so neither a path nor a subject can be escaped.
SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def new_recording_id() -> str:
    return "rec_" + secrets.token_hex(12)


def new_tenant_id() -> str:
    return "ten_" + secrets.token_hex(8)


def new_destination_id() -> str:
    return "dst_" + secrets.token_hex(8)


def new_webhook_id() -> str:
    return "wh_" + secrets.token_hex(8)


def is_webhook_id(value: str) -> bool:
    return bool(WEBHOOK_ID_RE.match(value))


def is_recording_id(value: str) -> bool:
    return bool(RECORDING_ID_RE.match(value))


def is_safe_name(value: str) -> bool:
    return bool(SAFE_NAME_RE.match(value))


def slugify(value: str, *, fallback: str = "participant") -> str:
    """Fold a display name to a safe path segment: ASCII letters, digits, '-' and '_' only.

    NFKD folding turns look-alikes (full-width letters, ligatures) into plain ASCII or drops them,
    so no unicode trick can produce '.', '/' or a NUL in the result.
    """
    folded = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", folded).strip("-_")[:64]
    return slug if slug and SAFE_NAME_RE.match(slug) else fallback
