"""Why an upload failed, in two kinds: worth retrying, or not.

Adapters map their SDK's exceptions onto these, with a sentence of our own (SDK messages can echo
request details, so they are never passed on).
"""

from __future__ import annotations


class UploadError(Exception):
    """An upload did not complete; the message says what went wrong and what to do."""


class TransientUploadError(UploadError):
    """Timeouts, 5xx, throttling, connection errors, an unreachable vault: retry with backoff."""


class PermanentUploadError(UploadError):
    """Bad credentials, missing bucket, access denied, a bad config: retrying cannot help."""


class LocalIntegrityError(PermanentUploadError):
    """The backup on disk no longer matches what the transcoder sealed: never send it as good."""
