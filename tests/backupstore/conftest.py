"""Backup store fixtures: one SeaweedFS for this package, a fresh bucket per test, and ``store``,
the same contract run against the local folder and against SeaweedFS's S3 gateway.

The server is package-scoped, not session-scoped: in a full run it stops once these tests are
done instead of idling (and holding ~200 MB) through every later test."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.backupstore import MIN_PART_SIZE, BackupStore
from shared.backupstore.config import from_url
from shared.backupstore.s3 import S3BackupStore

from ..seaweed import SeaweedS3, seaweed_s3

_buckets = itertools.count()


@pytest.fixture(scope="package")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    with seaweed_s3(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture
def seaweed_bucket(seaweed: SeaweedS3) -> Iterator[str]:
    name = seaweed.new_bucket(f"t{next(_buckets)}-{secrets.token_hex(4)}")
    yield name
    seaweed.drop_bucket(name)


def write_secret(path: Path, secret: str, mode: int = 0o600) -> Path:
    path.write_text(secret + "\n")
    path.chmod(mode)
    return path


@pytest.fixture
def s3_store_for(seaweed: SeaweedS3, tmp_path: Path) -> Callable[..., S3BackupStore]:
    """Build an S3 store through ``from_url``, as a service would (secret from a 0600 file)."""

    def build(bucket: str, *, secret: str | None = None, **overrides: Any) -> S3BackupStore:
        secret_file = write_secret(
            tmp_path / f"secret-{secrets.token_hex(4)}",
            seaweed.secret_access_key if secret is None else secret,
        )
        args: dict[str, Any] = {
            "endpoint": seaweed.endpoint,
            "region": seaweed.region,
            "access_key_id": seaweed.access_key_id,
            "secret_access_key_file": secret_file,
            "part_size": MIN_PART_SIZE,
        }
        args.update(overrides)
        store = from_url(f"s3://{bucket}/backup", **args)
        assert isinstance(store, S3BackupStore)
        return store

    return build


@pytest.fixture(params=["local", "seaweed"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], BackupStore]:
    if request.param == "local":
        return lambda: from_url((tmp_path / "backup").as_uri())
    bucket = request.getfixturevalue("seaweed_bucket")
    build = request.getfixturevalue("s3_store_for")

    def s3() -> BackupStore:
        store = build(bucket)
        store.page_size = 2  # every listing and purge below crosses pages and batches
        store.delete_batch = 3
        return store  # type: ignore[no-any-return]

    return s3


@pytest.fixture
async def store(store_factory: Callable[[], BackupStore]) -> AsyncIterator[BackupStore]:
    built = store_factory()
    yield built
    await built.close()
