"""Pure parts of the uploader: remote keys, job ids, backoff, checksums, error mapping."""

from __future__ import annotations

import base64
import zlib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from services.uploader import plan
from services.uploader.config import UploaderConfig
from services.uploader.errors import PermanentUploadError, TransientUploadError
from services.uploader.layout import UnsafeKey, render_key
from services.uploader.purge import purge_recording
from services.uploader.s3 import b64_crc32, classify, composite_crc32, same_checksum
from shared.config import ConfigError, load

TENANT = "ten_00000000000000aa"
RID = "rec_0123456789abcdef01234567"
START = datetime(2026, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))  # 04:30 UTC, Mar 2


def key(template: str | None = None, prefix: str | None = None, name: str = "alice.webm") -> str:
    return render_key(
        template,
        prefix=prefix,
        tenant_id=TENANT,
        started_at=START,
        recording_id=RID,
        file_name=name,
    )


def test_default_template_and_prefix() -> None:
    assert key() == f"{TENANT}/2026-03-02/{RID}/alice.webm"
    assert key(prefix="/calls/eu/") == f"calls/eu/{TENANT}/2026-03-02/{RID}/alice.webm"
    assert key("{recording_id}-{file}") == f"{RID}-alice.webm"


@pytest.mark.parametrize(
    ("template", "prefix", "name"),
    [
        (None, None, "../escape.webm"),
        (None, None, ".."),
        (None, None, "a/b.webm"),
        (None, None, "/abs.webm"),
        (None, None, "nul\x00.webm"),
        (None, None, ".hidden"),
        ("../{recording_id}/{file}", None, "a.webm"),
        ("/{recording_id}/{file}", None, "a.webm"),
        ("{recording_id}//{file}", None, "a.webm"),
        ("{recording_id}/{file}", "../up", "a.webm"),
        ("{recording_id}/{file}", "a\\b", "a.webm"),
        ("{file.__class__}/{recording_id}", None, "a.webm"),
        ("{0}/{recording_id}/{file}", None, "a.webm"),
        ("{tenant!r}/{recording_id}/{file}", None, "a.webm"),
        ("{tenant:>99}/{recording_id}/{file}", None, "a.webm"),
        ("{tenant}/{file}", None, "a.webm"),  # no recording id: recordings would overwrite
        ("{tenant}/{recording_id}", None, "a.webm"),  # no file: files would overwrite
        ("{recording_id}/{file", None, "a.webm"),
    ],
)
def test_nothing_escapes_the_prefix(template: str | None, prefix: str | None, name: str) -> None:
    with pytest.raises(UnsafeKey) as info:
        key(template, prefix, name)
    assert isinstance(info.value, PermanentUploadError)


def test_job_ids_are_deterministic_per_attempt() -> None:
    job = plan.Job(RID, TENANT, "dst_0000000000000001", plan.SEALED, 3)
    assert job.job_id == f"{RID}:sealed:3"
    assert plan.trigger_of(job.job_id) == "sealed"
    again = plan.Job(RID, TENANT, "dst_0000000000000001", plan.SEALED, 3)
    assert plan.attempt_started(job).event_id == plan.attempt_started(again).event_id
    later = plan.Job(RID, TENANT, "dst_0000000000000001", plan.SEALED, 4)
    assert plan.attempt_started(job).event_id != plan.attempt_started(later).event_id
    # What a delivery confirms has one id whichever attempt confirms it.
    assert plan.uploaded(job, []).event_id == plan.uploaded(later, []).event_id
    other_dest = plan.Job(RID, TENANT, "dst_0000000000000002", "resend-r1", 1)
    assert plan.uploaded(other_dest, []).event_id != plan.uploaded(job, []).event_id
    assert plan.failed(job, "x", transient=True, retry=True).event_id != (
        plan.failed(later, "x", transient=True, retry=True).event_id
    )


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    assert plan.backoff(2, 1, lambda: 0.0) == 1.0
    assert plan.backoff(2, 1, lambda: 1.0) == 2.0
    assert plan.backoff(2, 4, lambda: 1.0) == 16.0
    assert plan.backoff(2, 30, lambda: 1.0) == plan.MAX_BACKOFF_S
    assert plan.will_retry(4, 5, transient=True) and not plan.will_retry(5, 5, transient=True)
    assert not plan.will_retry(1, 5, transient=False)


def test_checksums() -> None:
    a, b = b"x" * 100, b"y" * 7
    assert b64_crc32(zlib.crc32(a)) == base64.b64encode(zlib.crc32(a).to_bytes(4, "big")).decode()
    raw = zlib.crc32(a).to_bytes(4, "big") + zlib.crc32(b).to_bytes(4, "big")
    expected = base64.b64encode(zlib.crc32(raw).to_bytes(4, "big")).decode() + "-2"
    assert composite_crc32([zlib.crc32(a), zlib.crc32(b)]) == expected
    assert same_checksum(expected, expected)
    assert same_checksum(expected.split("-")[0], expected)  # provider omitted the part count
    assert not same_checksum(expected.split("-")[0] + "-3", expected)
    assert not same_checksum(b64_crc32(zlib.crc32(a)), expected)


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": "secret-looking text AKIAECHOED"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "PutObject",
    )


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (_client_error("NoSuchBucket", 404), PermanentUploadError),
        (_client_error("AccessDenied", 403), PermanentUploadError),
        (_client_error("InvalidAccessKeyId", 403), PermanentUploadError),
        (_client_error("SignatureDoesNotMatch", 403), PermanentUploadError),
        (_client_error("SlowDown", 503), TransientUploadError),
        (_client_error("InternalError", 500), TransientUploadError),
        (_client_error("RequestTimeout", 400), TransientUploadError),
        (_client_error("Whatever", 502), TransientUploadError),
        (EndpointConnectionError(endpoint_url="http://x"), TransientUploadError),
        (TimeoutError(), TransientUploadError),
    ],
)
def test_sdk_errors_map_to_our_own_sentences(exc: Exception, kind: type[Exception]) -> None:
    mapped = classify(exc, "upload", "alice.webm")
    assert type(mapped) is kind
    assert "AKIAECHOED" not in str(mapped) and "alice.webm" in str(mapped)


def test_purge_is_idempotent(tmp_path: Path) -> None:
    folder = tmp_path / TENANT / RID
    (folder / "output").mkdir(parents=True)
    (folder / "output" / "a.webm").write_bytes(b"12345")
    (folder / "capture" / "p").mkdir(parents=True)
    (folder / "capture" / "p" / "0.rgc").write_bytes(b"123")
    first = purge_recording(tmp_path, TENANT, RID)
    assert (first.bytes_freed, first.files) == (8, 2) and not folder.exists()
    assert (tmp_path / TENANT).exists()  # only the recording's own folder goes
    second = purge_recording(tmp_path, TENANT, RID)
    assert (second.bytes_freed, second.files) == (0, 0)


def test_config_refuses_parts_below_the_s3_minimum() -> None:
    with pytest.raises(ConfigError, match="RESGUARDO_UPLOAD_PART_SIZE"):
        load(UploaderConfig, {"RESGUARDO_UPLOAD_PART_SIZE": "1000"})
    cfg = load(UploaderConfig, {})
    assert (cfg.upload_max_attempts, cfg.upload_part_size, cfg.upload_concurrency) == (
        5,
        8 * 1024 * 1024,
        2,
    )
    assert cfg.upload_backoff_s == 2.0


def test_date_is_the_utc_day_of_the_start() -> None:
    assert START.astimezone(UTC).date().isoformat() in key()
