"""Standard Webhooks v1 signatures: what the notifier puts on every delivery.

Each delivery carries three headers: ``webhook-id`` (the event's id, the same on every retry, so
receivers can use it as their idempotency key), ``webhook-timestamp`` (unix seconds of this
attempt) and ``webhook-signature``: space-separated ``v1,<base64 HMAC-SHA256>`` entries over
``"<id>.<timestamp>.<body>"``. During a secret rotation the old secret keeps signing next to the
new one, so receivers that have not switched yet still find a signature they can check.

Secrets are ``whsec_<base64 of 24..64 random bytes>``; the HMAC key is the decoded part. They are
wrapped in :class:`WebhookSecret` so that no repr, log line or exception message shows one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets as _random
import time
from collections.abc import Mapping, Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
VERSION = "v1"
# The reference libraries accept five minutes of clock skew either way; receivers expect that.
DEFAULT_TOLERANCE_SECONDS = 300
# The spec asks for keys of 24 to 64 bytes; 32 is what we generate.
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64
GENERATED_KEY_BYTES = 32
# A rotation needs two; the cap stops a hostile header from costing us thousands of HMACs.
MAX_SIGNATURES = 10
# Our ids go into a header and into the signed string: no dots (they would make
# "id.timestamp.body" ambiguous), no whitespace or control characters.
_MSG_ID = re.compile(r"[A-Za-z0-9_-]{1,256}")
# No leading zeros: the digits we check are the digits that were signed, one spelling each.
_TIMESTAMP = re.compile(r"0|[1-9][0-9]{0,11}")


class WebhookSignatureError(Exception):
    """Base of this module's errors; messages never include a secret or a signature."""


class InvalidSecret(WebhookSignatureError, ValueError):
    """A secret is not ``whsec_`` + base64 of 24..64 bytes."""


class WebhookVerificationError(WebhookSignatureError):
    """A delivery's headers are missing, malformed, out of the time window, or match no secret."""


class WebhookSecret:
    """One signing secret. ``str()`` and ``repr()`` show only a fingerprint, never the key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
            raise InvalidSecret(
                f"a webhook secret must hold {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes"
            )
        self._key = bytes(key)

    @classmethod
    def parse(cls, text: str) -> WebhookSecret:
        """Read ``whsec_<base64>``; the prefix is required so a stray value is not taken as one."""
        if not text.startswith(SECRET_PREFIX):
            raise InvalidSecret(f"a webhook secret starts with {SECRET_PREFIX!r}")
        encoded = text[len(SECRET_PREFIX) :]
        try:
            # validate=True: a typo must fail here, not turn into a different key silently.
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidSecret("a webhook secret must be base64 after its prefix") from None
        return cls(key)

    def reveal(self) -> str:
        """The ``whsec_`` form, for the one response that hands the secret to its owner."""
        return SECRET_PREFIX + base64.b64encode(self._key).decode("ascii")

    @property
    def fingerprint(self) -> str:
        """12 hex of SHA-256 over the key: tells secrets apart in logs, exposing neither."""
        return hashlib.sha256(self._key).hexdigest()[:12]

    def mac(self, to_sign: bytes) -> bytes:
        return hmac.new(self._key, to_sign, hashlib.sha256).digest()

    def __repr__(self) -> str:
        return f"WebhookSecret(fingerprint={self.fingerprint!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WebhookSecret):
            return NotImplemented
        return hmac.compare_digest(self._key, other._key)

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would copy the raw key into whatever stores the pickle; refuse it.
        raise TypeError("WebhookSecret is not picklable")


SecretLike = WebhookSecret | str
Secrets = SecretLike | Sequence[SecretLike]


def generate_secret() -> WebhookSecret:
    """A new random secret; hand it to its owner with ``.reveal()``."""
    return WebhookSecret(_random.token_bytes(GENERATED_KEY_BYTES))


def _as_secrets(value: Secrets) -> list[WebhookSecret]:
    items: Sequence[SecretLike] = [value] if isinstance(value, WebhookSecret | str) else value
    out = [s if isinstance(s, WebhookSecret) else WebhookSecret.parse(s) for s in items]
    if not out:
        raise InvalidSecret("at least one webhook secret is needed")
    return out


def _signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode("ascii") + body


def sign(secrets: Secrets, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one delivery attempt.

    ``secrets`` is one secret or several (newest first during a rotation); each adds one
    ``v1,`` entry. ``timestamp`` is the attempt's unix time in seconds, ``body`` the exact bytes
    sent: receivers verify those bytes, so sign after serialising, never before.
    """
    if not _MSG_ID.fullmatch(msg_id):
        raise ValueError("a webhook id is 1..256 characters of A-Z, a-z, 0-9, '_' and '-'")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ValueError("a webhook timestamp is a non-negative integer of unix seconds")
    content = _signed_content(msg_id, timestamp, body)
    entries: list[str] = []
    for secret in _as_secrets(secrets):
        entry = f"{VERSION},{base64.b64encode(secret.mac(content)).decode('ascii')}"
        if entry not in entries:  # the same secret listed twice signs once
            entries.append(entry)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(entries),
    }


def _header(headers: Mapping[str, str], name: str) -> str:
    # Header names are case-insensitive; a plain dict from a web framework may keep any case.
    for key, value in headers.items():
        if key.lower() == name:
            return value
    raise WebhookVerificationError(f"the {name} header is missing")


def _candidates(header: str) -> list[bytes]:
    """The decoded ``v1`` signatures in a header; other versions and junk entries are skipped."""
    found: list[bytes] = []
    for entry in header.split()[:MAX_SIGNATURES]:
        version, sep, encoded = entry.partition(",")
        if not sep or version != VERSION:
            continue  # a future scheme (v1a, v2, ...) may stand beside ours
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return found


def verify(
    secrets: Secrets,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> str:
    """Check a delivery; returns its ``webhook-id`` or raises :class:`WebhookVerificationError`.

    Any of ``secrets`` may match any ``v1`` entry (so either side can rotate first). The
    timestamp must be within ``tolerance`` seconds of ``now``: that bounds how long a captured
    request can be replayed; deduplicating on the returned id covers the rest.
    """
    msg_id = _header(headers, "webhook-id")
    raw_ts = _header(headers, "webhook-timestamp").strip()
    signature_header = _header(headers, "webhook-signature")
    if not _MSG_ID.fullmatch(msg_id) or not _TIMESTAMP.fullmatch(raw_ts):
        raise WebhookVerificationError("the webhook-id or webhook-timestamp header is malformed")
    timestamp = int(raw_ts)
    current = time.time() if now is None else now
    if timestamp < current - tolerance:
        raise WebhookVerificationError("the webhook timestamp is too old")
    if timestamp > current + tolerance:
        raise WebhookVerificationError("the webhook timestamp is too far in the future")
    candidates = _candidates(signature_header)
    if not candidates:
        raise WebhookVerificationError("the webhook-signature header has no v1 signature")
    content = _signed_content(msg_id, timestamp, body)  # the id is ASCII: checked above
    for secret in _as_secrets(secrets):
        expected = secret.mac(content)
        for candidate in candidates:
            # compare_digest: the time taken must not tell an attacker how many bytes matched.
            if hmac.compare_digest(expected, candidate):
                return msg_id
    raise WebhookVerificationError("no webhook signature matches")
