"""S3 SDK failures in the backup store's terms (``errors.py``), in our own words.

An SDK message can echo request details (headers, the canonical request), so none is reused:
each error is built from the error code, the HTTP status and the exception's class name only.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    FlexibleChecksumError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from .errors import (
    BackupStoreError,
    ChecksumMismatch,
    ObjectMissing,
    StoreRefused,
    StoreUnavailable,
)

CREDENTIAL_HINT = (
    "check RESGUARDO_BACKUP_S3_ACCESS_KEY_ID, the file named by "
    "RESGUARDO_BACKUP_S3_SECRET_ACCESS_KEY_FILE and the bucket's permissions"
)
MISSING_CODES = {"NoSuchKey", "NotFound", "404"}
AUTH_CODES = {
    "AccessDenied",
    "AccountProblem",
    "AllAccessDisabled",
    "AuthorizationHeaderMalformed",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidToken",
    "SignatureDoesNotMatch",
    "401",
    "403",
}
DIGEST_CODES = {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"}
TRANSIENT_CODES = {
    "InternalError",
    "NoSuchUpload",  # a multipart upload aborted under us: start over
    "OperationAborted",
    "RequestTimeTooSkewed",
    "RequestTimeout",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
}
NETWORK_ERRORS = (
    BotoConnectionError,
    HTTPClientError,
    aiohttp.ClientError,
    asyncio.TimeoutError,
    OSError,
)


def code_and_status(exc: ClientError) -> tuple[str, int]:
    response: dict[str, Any] = exc.response or {}
    code = str((response.get("Error") or {}).get("Code", "") or "")
    status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def client_error(code: str, status: int, operation: str) -> ClientError:
    """A ClientError for a failure the store reported in a body (DeleteObjects) or not at all
    (a bare 404 to HEAD), so that it is mapped like any other."""
    return ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


def is_missing(exc: BaseException) -> bool:
    if not isinstance(exc, ClientError):
        return False
    code, status = code_and_status(exc)
    return code in MISSING_CODES or (status == 404 and code != "NoSuchBucket")


def map_error(exc: BaseException, *, action: str, key: str, where: str) -> BackupStoreError:
    """``where`` names the store (endpoint and bucket); ``action`` + ``key`` what was tried."""
    if isinstance(exc, BackupStoreError):
        return exc
    doing = f"{action} {key}" if key else action
    if isinstance(exc, ClientError):
        code, status = code_and_status(exc)
        said = f"{where} answered {code or status} to {doing}"
        if code in DIGEST_CODES:
            return ChecksumMismatch(
                f"{said}: the bytes it received do not match their checksum (damaged in "
                "transit); send them again",
                transient=True,
            )
        if code == "NoSuchBucket":
            return StoreRefused(f"{said}: the bucket does not exist; create it or fix the URL")
        if code in AUTH_CODES or status in (401, 403):
            return StoreRefused(f"{said}: it refused the credentials or access; {CREDENTIAL_HINT}")
        if is_missing(exc):
            return ObjectMissing(f"{where} holds nothing at {key}")
        if code in TRANSIENT_CODES or status >= 500 or status in (408, 429):
            return StoreUnavailable(f"{said}; try again later")
        return StoreRefused(f"{said}; check the store's settings")
    if isinstance(exc, FlexibleChecksumError):
        return ChecksumMismatch(
            f"{where} sent bytes for {key} that do not match their CRC-32; read again",
            transient=True,
        )
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | ParamValidationError):
        return StoreRefused(
            f"the S3 client refused its settings while trying to {doing} "
            f"({type(exc).__name__}); {CREDENTIAL_HINT}"
        )
    if isinstance(exc, NETWORK_ERRORS):
        return StoreUnavailable(
            f"{where} could not be reached to {doing} ({type(exc).__name__}); "
            "check RESGUARDO_BACKUP_S3_ENDPOINT and that the store is running"
        )
    if isinstance(exc, BotoCoreError):
        return StoreUnavailable(f"{where} failed to {doing} ({type(exc).__name__})")
    return BackupStoreError(f"{where} failed to {doing} ({type(exc).__name__})")
