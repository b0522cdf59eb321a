"""The proxy's small exception tree: a refusal carries its HTTP status and one sentence."""

from __future__ import annotations


class ProxyError(Exception):
    """Base of the proxy's own errors."""


class WhipRefused(ProxyError):
    """A WHIP request is refused; ``str(exc)`` is shown to the client as plain text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class CaptureFailed(ProxyError):
    """Writing a capture segment failed (e.g. the disk is full)."""
