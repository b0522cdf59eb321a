"""Pure parts of the GCS, Azure and FTP adapters, the resume state and the provider fields."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import aioftp
import msgspec
import pytest
from azure.core.exceptions import HttpResponseError

from services.uploader import azure, ftp, gcs
from services.uploader.confirm import verify_mode
from services.uploader.errors import PermanentUploadError, TransientUploadError
from services.uploader.layout import UnsafeKey, render_key
from services.uploader.resume import FILE_NAME, ResumeStore, detached
from shared.events.transcodes import SealedFile
from shared.providers import FieldError, split_config

SEALED = SealedFile(
    name="a.webm",
    role="media",
    size=3,
    sha256=hashlib.sha256(b"abc").hexdigest(),
    crc32=0,
    content_type="video/webm",
)


async def test_resume_state_is_kept_per_file_and_bytes_and_removed_when_done(
    tmp_path: Path,
) -> None:
    store = ResumeStore(tmp_path)
    slot = store.slot("dst_1", "k/a.webm", SEALED)
    assert await slot.load("s3-multipart") is None
    await slot.save("s3-multipart", {"upload_id": "u1"})
    again = ResumeStore(tmp_path).slot("dst_1", "k/a.webm", SEALED)  # a new process
    assert await again.load("s3-multipart") == {"upload_id": "u1"}
    assert await again.load("gcs-resumable") is None  # another adapter's state is not ours
    other_bytes = msgspec.structs.replace(SEALED, sha256="0" * 64)
    assert await store.slot("dst_1", "k/a.webm", other_bytes).load("s3-multipart") is None
    assert await store.slot("dst_2", "k/a.webm", SEALED).load("s3-multipart") is None
    raw = json.loads((tmp_path / FILE_NAME).read_text())
    assert "secret" not in json.dumps(raw)
    await again.clear()
    assert FILE_NAME not in os.listdir(tmp_path)  # nothing left for the purge to count
    await detached(SEALED).save("x", {"a": 1})  # keeps nothing, writes nothing
    assert os.listdir(tmp_path) == []


def test_gcs_answers_are_mapped() -> None:
    assert gcs._held_from("bytes=0-262143") == 262144
    assert gcs._held_from(None) == 0
    damaged = gcs.classify_status(400, '{"message": "Provided CRC32C does not match"}', "u", "a")
    assert isinstance(damaged, TransientUploadError)
    assert isinstance(gcs.classify_status(503, "", "u", "a"), TransientUploadError)
    assert isinstance(gcs.classify_status(429, "", "u", "a"), TransientUploadError)
    missing = gcs.classify_status(404, "", "u", "a")
    assert isinstance(missing, PermanentUploadError) and "bucket does not exist" in str(missing)
    assert isinstance(gcs.classify_status(403, "", "u", "a"), PermanentUploadError)
    assert isinstance(gcs.classify_status(400, "bad name", "u", "a"), PermanentUploadError)
    with pytest.raises(PermanentUploadError, match="service_account_json"):
        gcs.GCSBackend({"bucket": "b"}, {}, part_size=8 << 20)
    # Chunks are whole multiples of GCS's 256 KiB unit.
    assert (
        gcs.GCSBackend({"bucket": "b", "endpoint": "http://x"}, {}, part_size=5_000_000).chunk
        % (256 * 1024)
        == 0
    )


def _azure_error(status: int, code: str) -> HttpResponseError:
    err = HttpResponseError(message="server said something with a secret in it")
    err.status_code = status
    err.error_code = code  # type: ignore[attr-defined]
    return err


def test_azure_block_ids_and_errors() -> None:
    md5 = hashlib.md5(b"x").digest()
    a, b = azure.block_id(0, md5), azure.block_id(123456, hashlib.md5(b"y").digest())
    assert len(a) == len(b) and a != b and a == azure.block_id(0, md5)
    assert azure.account_name("https://acct.blob.core.windows.net") == "acct"
    assert azure.account_name("http://127.0.0.1:10000/devstoreaccount1") == "devstoreaccount1"
    damaged = azure.classify(_azure_error(400, "Md5Mismatch"), "upload block 1 of", "a")
    assert isinstance(damaged, TransientUploadError) and "secret" not in str(damaged)
    gone = azure.classify(_azure_error(404, "ContainerNotFound"), "x", "a")
    assert isinstance(gone, PermanentUploadError) and "container does not exist" in str(gone)
    assert isinstance(
        azure.classify(_azure_error(403, "AuthorizationFailure"), "x", "a"), (PermanentUploadError)
    )
    assert isinstance(
        azure.classify(_azure_error(503, "ServerBusy"), "x", "a"), TransientUploadError
    )
    assert isinstance(azure.classify(ConnectionResetError(), "x", "a"), TransientUploadError)
    with pytest.raises(PermanentUploadError, match="connection_string, or account_url"):
        azure.make_service({"container": "c"}, {})
    with pytest.raises(PermanentUploadError, match="connection_string, or account_url"):
        azure.make_service({"container": "c", "account_url": "https://a.blob.core.windows.net"}, {})


def _ftp_error(code: str) -> aioftp.StatusCodeError:
    return aioftp.StatusCodeError(aioftp.Code("2xx"), aioftp.Code(code), ["secret path"])


def test_ftp_reply_codes_and_directories() -> None:
    assert isinstance(ftp.classify(_ftp_error("451"), "x", "a"), TransientUploadError)
    assert isinstance(ftp.classify(_ftp_error("421"), "x", "a"), TransientUploadError)
    login = ftp.classify(_ftp_error("530"), "x", "a")
    assert isinstance(login, PermanentUploadError) and "login refused" in str(login)
    assert isinstance(ftp.classify(_ftp_error("550"), "x", "a"), PermanentUploadError)
    assert "secret" not in str(ftp.classify(_ftp_error("550"), "x", "a"))
    assert isinstance(ftp.classify(ConnectionResetError(), "x", "a"), TransientUploadError)
    assert str(ftp.safe_directory("/inbox/calls/")) == "/inbox/calls"
    assert str(ftp.safe_directory("")) == "."
    for bad in ("../up", "/a/../b", "a//b", "a/\x00/b", "a/\uff0e\uff0e/b", "\u2025", "a\uff0fb"):
        with pytest.raises(PermanentUploadError):
            ftp.safe_directory(bad)
    strict = ftp.FTPBackend({"host": "h", "verify": "checksum"}, {})
    with pytest.raises(PermanentUploadError, match="no SHA-256 HASH"):
        strict._mode()  # no HASH offered (never connected): no proof possible
    assert ftp.FTPBackend({"host": "h"}, {})._mode() == "readback"
    implicit = ftp.FTPBackend({"host": "h", "tls": "implicit"}, {})
    assert implicit.port == 990 and implicit.scheme == "ftps"
    assert ftp.HASH_RE.match("SHA-256 0-2 " + "ab" * 32 + " /x/a.webm")


@pytest.mark.parametrize(
    ("template", "prefix"),
    [
        ("{tenant}/\uff0e\uff0e/{recording_id}/{file}", None),  # fullwidth full stops
        ("{tenant}/\u2025/{recording_id}/{file}", None),  # two-dot leader
        ("{tenant}/a\uff0fb/{recording_id}/{file}", None),  # fullwidth solidus
        (None, "calls/\u2024"),  # one-dot leader
        (None, "calls/\u200b\x00"),
    ],
)
def test_unicode_look_alikes_cannot_leave_the_prefix(
    template: str | None, prefix: str | None
) -> None:
    with pytest.raises(UnsafeKey):
        render_key(
            template,
            prefix=prefix,
            tenant_id="ten_00000000000000aa",
            started_at=datetime(2026, 1, 1, tzinfo=UTC),
            recording_id="rec_0123456789abcdef01234567",
            file_name="a.webm",
        )


def test_verify_setting() -> None:
    assert verify_mode({}) is None
    assert verify_mode({"verify": "readback"}) == "readback"
    with pytest.raises(PermanentUploadError):
        verify_mode({"verify": "trust-me"})


def test_provider_fields_split_secrets() -> None:
    public, secret = split_config(
        "gcs",
        {"bucket": "b", "service_account_json": "{}", "endpoint": "http://e", "verify": "checksum"},
    )
    assert public == {"bucket": "b", "endpoint": "http://e", "verify": "checksum"}
    assert secret == {"service_account_json": "{}"}
    public, secret = split_config(
        "azure",
        {"container": "c", "account_url": "https://a", "account_key": "k", "sas_token": "s"},
    )
    assert public == {"container": "c", "account_url": "https://a"}
    assert secret == {"account_key": "k", "sas_token": "s"}
    _, secret = split_config("azure", {"container": "c", "connection_string": "cs"})
    assert secret == {"connection_string": "cs"}
    public, secret = split_config(
        "ftp",
        {
            "host": "h",
            "port": 2121,
            "username": "u",
            "password": "p",
            "directory": "/in",
            "tls": "none",
        },
    )
    assert secret == {"password": "p"} and public["port"] == 2121 and public["tls"] == "none"
    with pytest.raises(FieldError) as info:
        split_config("ftp", {"host": "h", "tls": "sometimes"})
    assert info.value.field == "config.tls"
    with pytest.raises(FieldError) as info:
        split_config("ftp", {"host": "h", "port": "21"})
    assert info.value.field == "config.port"
    with pytest.raises(FieldError) as info:
        split_config("gcs", {"endpoint": "http://e"})
    assert info.value.field == "config.bucket"
