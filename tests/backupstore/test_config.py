"""Choosing the backup store from settings: every bad value is one sentence naming its variable,
and no sentence repeats a secret. No server needed."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from shared.backupstore import MIN_PART_SIZE, UnsafeKey, capture_key, output_key
from shared.backupstore.config import from_env, from_url
from shared.backupstore.local import LocalBackupStore
from shared.backupstore.s3 import S3BackupStore
from shared.config import ConfigError

from .conftest import write_secret

URL = "RESGUARDO_BACKUP_URL"
ENDPOINT = "RESGUARDO_BACKUP_S3_ENDPOINT"
REGION = "RESGUARDO_BACKUP_S3_REGION"
KEY_ID = "RESGUARDO_BACKUP_S3_ACCESS_KEY_ID"
SECRET_FILE = "RESGUARDO_BACKUP_S3_SECRET_ACCESS_KEY_FILE"
SECRET = "s3cr3t-CANARY-value"


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    return write_secret(tmp_path / "secret", SECRET)


def s3(url: str = "s3://resguardo-backup/ours", **overrides: object) -> object:
    args: dict[str, object] = {
        "endpoint": "http://127.0.0.1:8333",
        "region": "us-east-1",
        "access_key_id": "AKIDEXAMPLE",
    }
    args.update(overrides)
    return from_url(url, **args)  # type: ignore[arg-type]


def refused(variable: str, build: Callable[[], object]) -> str:
    with pytest.raises(ConfigError) as caught:
        build()
    message = str(caught.value)
    assert variable in message, message
    assert message.endswith(".") and message.count(". ") == 0, message  # one sentence
    assert SECRET not in message
    return message


def test_file_and_s3_urls(tmp_path: Path, secret_file: Path) -> None:
    local = from_url((tmp_path / "b").as_uri())
    assert isinstance(local, LocalBackupStore) and local.root == tmp_path / "b"
    store = s3(secret_access_key_file=secret_file)
    assert isinstance(store, S3BackupStore)
    assert (store.bucket, store.prefix, store.url) == (
        "resguardo-backup",
        "ours",
        "s3://resguardo-backup/ours",
    )
    assert SECRET not in repr(store) + str(vars(store))


def test_from_env(tmp_path: Path, secret_file: Path) -> None:
    default = from_env(tmp_path / "backup", env={})
    assert isinstance(default, LocalBackupStore) and default.root == tmp_path / "backup"
    env = {
        URL: "s3://resguardo-backup",
        ENDPOINT: "https://store.example:9000",
        KEY_ID: "AKIDEXAMPLE",
        SECRET_FILE: str(secret_file),
    }
    store = from_env(tmp_path, env=env)
    assert isinstance(store, S3BackupStore) and store.endpoint == env[ENDPOINT]
    refused(SECRET_FILE, lambda: from_env(tmp_path, env={**env, SECRET_FILE: ""}))


@pytest.mark.parametrize(
    "url",
    [
        "ftp://host/x",
        "backup",
        "file://otherhost/srv/backup",
        "file:relative/path",
        "file:///srv/backup?x=1",
        "s3://AB",
        "s3://bucket/../escape",
        "s3://bucket/a//b",
        "s3://user:s3cr3t-CANARY-value@bucket",
        "s3://bucket#frag",
    ],
)
def test_bad_urls(url: str, secret_file: Path) -> None:
    refused(URL, lambda: s3(url, secret_access_key_file=secret_file))


@pytest.mark.parametrize(
    "endpoint",
    ["ftp://host", "127.0.0.1:8333", "http://", "http://h:99999", "http://h/path", "http://a:b@h"],
)
def test_bad_endpoints(endpoint: str, secret_file: Path) -> None:
    refused(ENDPOINT, lambda: s3(endpoint=endpoint, secret_access_key_file=secret_file))


def test_bad_region_and_access_key(secret_file: Path) -> None:
    refused(REGION, lambda: s3(region="us east", secret_access_key_file=secret_file))
    refused(KEY_ID, lambda: s3(access_key_id="", secret_access_key_file=secret_file))
    refused(KEY_ID, lambda: s3(access_key_id="has space", secret_access_key_file=secret_file))


def test_secret_file_must_be_private_regular_and_non_empty(tmp_path: Path) -> None:
    refused(SECRET_FILE, lambda: s3(secret_access_key_file=None))
    refused(SECRET_FILE, lambda: s3(secret_access_key_file=tmp_path / "absent"))
    refused(SECRET_FILE, lambda: s3(secret_access_key_file=tmp_path))  # a folder
    for mode in (0o644, 0o640, 0o602):
        loose = write_secret(tmp_path / f"loose{mode:o}", SECRET, mode)
        assert "0600" in refused(SECRET_FILE, partial(s3, secret_access_key_file=loose))
    empty = write_secret(tmp_path / "empty", "")
    refused(SECRET_FILE, lambda: s3(secret_access_key_file=empty))
    assert isinstance(
        s3(secret_access_key_file=write_secret(tmp_path / "ro", SECRET, 0o400)), S3BackupStore
    )


def test_part_size_has_s3s_minimum(secret_file: Path) -> None:
    with pytest.raises(ValueError, match="at least"):
        s3(secret_access_key_file=secret_file, part_size=MIN_PART_SIZE - 1)


def test_key_builders_check_their_ids() -> None:
    ten, rec = "ten_" + "0" * 16, "rec_" + "0" * 24
    assert capture_key(ten, rec, "alice", "t1", 7) == f"{ten}/{rec}/capture/alice/t1/000007.rgc"
    assert output_key(ten, rec, "SHA256SUMS") == f"{ten}/{rec}/output/SHA256SUMS"
    bad_keys: list[Callable[[], str]] = [
        lambda: capture_key("tenant", rec, "alice", "t1", 1),
        lambda: capture_key(ten, "rec_1", "alice", "t1", 1),
        lambda: capture_key(ten, rec, "../alice", "t1", 1),
        lambda: capture_key(ten, rec, "alice", "t1", -1),
        lambda: output_key(ten, rec, "../../etc"),
    ]
    for bad in bad_keys:
        with pytest.raises(UnsafeKey):
            bad()
