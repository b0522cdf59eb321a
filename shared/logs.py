"""Structured JSON logs, one object per line, with secrets redacted before anything is written.

Redaction is by field name (anything that looks like a secret, token, password or key material)
and by pattern in messages (bearer tokens, AWS-style keys, URLs with passwords). Code must still
never log a credential on purpose: this is the net under the rope, not the rope.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(
    r"(secret|passw|token|authorization|credential|private|api[_-]?key|access[_-]?key|"
    r"sas|connection[_-]?string|account[_-]?key|service[_-]?account)",
    re.IGNORECASE,
)
_SECRET_VALUE = [
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)(://[^/\s:@]+:)[^@\s/]+@"),  # user:password@ in URLs
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(r"(?i)(AccountKey|SharedAccessSignature|sig)=[^;&\s]+"),
]
_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def redact_text(text: str) -> str:
    for pattern in _SECRET_VALUE:
        text = pattern.sub(lambda m: (m.group(1) if m.lastindex else "") + REDACTED, text)
    return text


def redact(value: Any, key: str = "") -> Any:
    if key and _SECRET_KEY.search(key) and not key.endswith(("_sha256", "_id", "_version")):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": redact_text(record.getMessage()),
        }
        for k, v in record.__dict__.items():
            if k not in _STD_ATTRS and not k.startswith("_"):
                out[k] = redact(v, k)
        if record.exc_info and record.exc_info[0] is not None:
            # Type and redacted text only: tracebacks can carry locals' reprs in some handlers.
            exc = record.exc_info[1]
            out["error"] = f"{record.exc_info[0].__name__}: {redact_text(str(exc))}"
            out["traceback"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


def setup(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiortc/aioice debug logs include SDP and ICE credentials: keep them quiet.
    for noisy in ("aioice", "aiortc", "botocore", "aiobotocore", "nats", "pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
