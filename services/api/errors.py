"""The API's errors: each becomes ``{"error": {"message", "field"}}`` with its HTTP status."""

from __future__ import annotations


class ApiError(Exception):
    """A request the API refuses; ``message`` is one sentence: what went wrong, what to do."""

    def __init__(self, status: int, message: str, field: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


class VaultUnavailable(ApiError):
    def __init__(self) -> None:
        super().__init__(
            503,
            "The credential vault did not answer; check that the credentials service is running, "
            "then retry.",
        )
