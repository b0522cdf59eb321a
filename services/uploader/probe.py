"""Testing a destination (``destinations add``, unless ``--no-probe``, and ``destinations test``):
the uploader's half, run for the vault's ``vault.probe_requested`` (durable ``uploader-probe``).

Like an upload job, a test gets its credentials as a one-shot grant from the vault (sealed to a
key made for this test alone, checked against the request in the event log, audited), kept in a
``bytearray`` that is overwritten when the test ends, whatever its outcome (``grant.py`` says what
that cannot promise: the decoded values and the SDK's signer keep immutable copies until they
are collected). With the uploads' own adapters it writes a small object where a recording's file
would go (the destination's prefix and key template, the test's own throw-away recording id),
confirms it the way uploads are confirmed (the provider's checksum, or a readback), then deletes
it. A failure becomes one sentence naming the cause and the config field to fix (unknown access
key, wrong secret, missing bucket, no permission, unreachable endpoint), published in
``upload.probe_finished`` for the vault: never a secret, never the SDK's own text.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from shared import natsio
from shared.events import AnyEvent, event_id, now
from shared.events import uploads as up_events
from shared.events import vault as vault_events
from shared.events.transcodes import SealedFile
from shared.ids import TENANT_ID_RE, is_recording_id
from shared.natsio import ConsumerSpec, Reject
from shared.vault_rpc import Grant

from . import backend as backends
from .backend import Backend
from .config import S3_MIN_PART, UploaderConfig
from .errors import PermanentUploadError, TransientUploadError, UploadError
from .grant import request_grant
from .layout import render_key
from .resume import detached

log = logging.getLogger(__name__)

PROBE_FILE = "resguardo-probe.txt"
CONCURRENCY = 4  # tests at once, beside the uploads: a user waits for each
MAX_TIMEOUT_S = 600.0
# What to do about a failed test, by the request's purpose (the vault says which).
FIXES = {
    "add": 'fix it and add it again, or skip this test with --no-probe ("probe": false)',
    "test": "re-create the destination with working settings",
}

# Provider error code -> (config field to fix, what it means).
_CAUSES: dict[str, tuple[str, str]] = {
    "InvalidAccessKeyId": (
        "config.access_key_id",
        "the storage provider does not know this access key id",
    ),
    "SignatureDoesNotMatch": (
        "config.secret_access_key",
        "the secret access key does not match the access key id",
    ),
    "InvalidToken": ("config.session_token", "the session token is not valid"),
    "ExpiredToken": ("config.session_token", "the session token has expired"),
    "NoSuchBucket": ("config.bucket", "the bucket does not exist"),
    "InvalidBucketName": ("config.bucket", "the bucket name is not valid"),
    "AccessDenied": (
        "config",
        "the credentials are not allowed to {step} it (the probe needs s3:PutObject, "
        "s3:GetObject and s3:DeleteObject under the prefix)",
    ),
    "AllAccessDisabled": ("config.bucket", "all access to the bucket is disabled"),
    "AccountProblem": ("config.access_key_id", "the provider reports a problem with the account"),
    "PermanentRedirect": ("config.region", "the bucket is in another region"),
    "AuthorizationHeaderMalformed": ("config.region", "the bucket is in another region"),
}


class ProbeFailed(Exception):
    """The destination did not pass the probe; ``message`` is the one sentence to show."""

    def __init__(self, status: int, message: str, field: str = "config") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


@dataclass(frozen=True)
class ProbeResult:
    key: str
    checksum_algorithm: str
    checksum: str
    deleted: bool = True  # every adapter deletes; kept for the reply's shape


def _provider_code(exc: BaseException) -> str:
    """The storage provider's error code behind an adapter error (adapters raise their own
    sentence ``from None``; the SDK's exception is still its ``__context__``)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        response = getattr(cur, "response", None)
        if isinstance(response, dict):
            code = str((response.get("Error") or {}).get("Code") or "")
            if code:
                # The provider's text, echoed to the user: keep it a short plain token.
                return code[:64] if code[:64].isalnum() else "an error"
        cur = cur.__cause__ or cur.__context__
    return ""


def explain(exc: BaseException, step: str, fix: str, field: str = "config") -> ProbeFailed:
    """One sentence for a failed probe step (``write``, ``delete``); ``field`` is the config
    field to blame when the provider gives no code."""
    code = _provider_code(exc)
    if code in _CAUSES:
        field, what = _CAUSES[code]
        what = what.format(step=step)
        return ProbeFailed(422, f"The destination test failed: {what} ({code}); {fix}.", field)
    if code:
        return ProbeFailed(
            422,
            f"The destination test failed: the storage provider answered {code} when asked to "
            f"{step} a test object; {fix}.",
        )
    status = 502 if isinstance(exc, TransientUploadError) else 422
    return ProbeFailed(status, f"The destination test failed: {_what(exc)}; {fix}.", field)


def _what(exc: BaseException) -> str:
    """The adapter's sentence without its own advice (``<what>; <what to do>``): the probe
    gives advice of its own."""
    return str(exc).split("; ", 1)[0].rstrip(".")


def _created_dirs(provider: str, public: dict[str, Any], key: str) -> list[Path]:
    """For a file destination: the folders between its root and the probe's file that do not
    exist yet (deepest first), to remove after the probe."""
    if provider != "file":
        return []
    root = Path(str(public.get("path", ""))).expanduser()
    if not root.is_absolute():
        return []
    out: list[Path] = []
    cur = (root / key).parent
    while cur != root and root in cur.parents and not cur.exists():
        out.append(cur)
        cur = cur.parent
    return out


async def _forget(backend: Backend, key: str) -> None:
    """Best effort, a few seconds at most: delete a probe object that may have been written."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5):
            await backend.delete(key)


async def probe(
    grant: Grant, *, tenant_id: str, probe_id: str, timeout: float, fix: str
) -> ProbeResult:
    """Write, confirm and delete a test object at the destination; ``ProbeFailed`` if any step
    fails (nothing is left behind when the write itself failed)."""
    provider, public = grant.provider, grant.config
    try:
        store = backends.build(grant, part_size=S3_MIN_PART)
        key = render_key(
            public.get("key_template"),
            prefix=public.get("prefix"),
            tenant_id=tenant_id,
            started_at=now(),
            recording_id=probe_id,
            file_name=PROBE_FILE,
        )
    except PermanentUploadError as exc:
        field = "config.key_template" if "key_template" in str(exc) else "config"
        field = "config.prefix" if "prefix" in str(exc) else field
        message = f"The destination test failed: {_what(exc)}; {fix}."
        raise ProbeFailed(422, message, field) from None
    except Exception as exc:  # an SDK refusing the settings: its text may quote them
        raise ProbeFailed(
            422,
            f"The destination test failed: its storage client refused the settings "
            f"({type(exc).__name__}); {fix}.",
        ) from None
    data = f"Resguardo destination probe {secrets.token_hex(16)}\n".encode()
    sealed = SealedFile(
        name=PROBE_FILE,
        role="checksums",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        crc32=zlib.crc32(data),
        content_type="text/plain",
    )
    new_dirs = _created_dirs(provider, public, key)
    step = "write"
    try:
        async with asyncio.timeout(timeout):
            with tempfile.TemporaryDirectory(prefix="resguardo-probe-") as tmp:
                local = Path(tmp) / PROBE_FILE
                local.write_bytes(data)
                remote = await store.upload(local, key, sealed, detached(sealed))
            step = "delete"
            await store.delete(key)
    except TimeoutError:
        raise ProbeFailed(
            504,
            f"The destination test failed: the destination did not answer within {timeout:g} s "
            f"(while trying to {step} a test object); check its endpoint and network, then {fix}.",
        ) from None
    except UploadError as exc:
        if step == "write" and _provider_code(exc):  # maybe written, not confirmed: clean up
            await _forget(store, key)
        raise explain(exc, step, fix, "config.path" if provider == "file" else "config") from None
    except OSError as exc:  # the local temp file
        raise ProbeFailed(
            422 if step == "delete" else 503,
            f"The destination test failed: could not {step} the test object "
            f"({type(exc).__name__}); {fix}.",
        ) from None
    except ProbeFailed:
        raise
    except Exception as exc:  # an adapter bug: say which, never its text (it may quote settings)
        log.exception("destination probe crashed", extra={"provider": provider})
        raise ProbeFailed(
            502,
            f"The destination test failed: the storage adapter failed unexpectedly "
            f"({type(exc).__name__}); retry, or {fix}.",
        ) from None
    finally:
        with contextlib.suppress(Exception):
            await store.close()
    for folder in new_dirs:  # the file provider's folders made only for the probe
        with contextlib.suppress(OSError):
            folder.rmdir()
    return ProbeResult(
        key=key,
        checksum_algorithm=remote.checksum_algorithm,
        checksum=remote.checksum,
        deleted=True,
    )


def consumer(cfg: UploaderConfig) -> ConsumerSpec:
    return ConsumerSpec(
        stream=vault_events.STREAM,
        durable="uploader-probe",
        filter_subjects=(vault_events.STREAM.filter("probe_requested"),),
        ack_wait_s=cfg.upload_ack_wait_s,
        max_ack_pending=CONCURRENCY,
    )


def handler(nc: NATS, js: JetStreamContext, cfg: UploaderConfig) -> natsio.Handler:
    """The ``uploader-probe`` consumer's handler: one test per request, answered once."""

    async def on_probe(event: AnyEvent, msg: Msg) -> None:
        if not isinstance(event, vault_events.ProbeRequested):
            return
        rid = event.recording_id
        if not is_recording_id(rid) or not TENANT_ID_RE.match(event.tenant_id):
            raise Reject("the destination test's probe or tenant id is not valid")
        done = await natsio.last_event(js, up_events.STREAM, f"uploads.{rid}.probe_finished")
        if isinstance(done, up_events.ProbeFinished):
            return  # answered already (a redelivery)
        finished = await answer(nc, event, grant_timeout=cfg.upload_grant_timeout_s)
        await natsio.publish(js, finished)
        log.log(
            logging.INFO if finished.passed else logging.WARNING,
            "destination tested" if finished.passed else "destination test failed",
            extra={
                "probe_id": rid,
                "destination_id": event.destination_id,
                "purpose": event.purpose,
                "status": finished.status,
            },
        )

    return on_probe


async def answer(
    nc: NATS, request: vault_events.ProbeRequested, *, grant_timeout: float
) -> up_events.ProbeFinished:
    """Run the test the vault asked for, with its one-shot grant; the event that answers it."""
    fix = FIXES.get(request.purpose, FIXES["test"])
    try:
        material = await request_grant(
            nc,
            job_id=request.job_id,
            recording_id=request.recording_id,
            tenant_id=request.tenant_id,
            destination_id=request.destination_id,
            timeout=grant_timeout,
            probe=True,
        )
    except UploadError as exc:  # its sentence names the vault's reason, never a secret
        return _finished(request, ProbeFailed(503, f"The destination test failed: {exc}; {fix}."))
    try:
        result = await probe(
            material.grant,
            tenant_id=request.tenant_id,
            probe_id=request.recording_id,
            timeout=max(0.1, min(request.timeout_s, MAX_TIMEOUT_S)),
            fix=fix,
        )
    except ProbeFailed as failed:
        return _finished(request, failed)
    finally:
        material.wipe()
    return _finished(request, result)


def _finished(
    request: vault_events.ProbeRequested, outcome: ProbeResult | ProbeFailed
) -> up_events.ProbeFinished:
    common: dict[str, Any] = {
        "event_id": event_id(request.recording_id, "probe_finished", request.job_id),
        "recording_id": request.recording_id,
        "tenant_id": request.tenant_id,
        "occurred_at": now(),
        "job_id": request.job_id,
        "destination_id": request.destination_id,
    }
    if isinstance(outcome, ProbeFailed):
        return up_events.ProbeFinished(
            **common,
            passed=False,
            status=outcome.status,
            message=outcome.message,
            field=outcome.field,
        )
    return up_events.ProbeFinished(
        **common,
        passed=True,
        key=outcome.key,
        checksum_algorithm=outcome.checksum_algorithm,
        checksum=outcome.checksum,
        deleted=outcome.deleted,
    )
