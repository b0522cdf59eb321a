"""The local folder's own guarantees: atomic writes, hidden bookkeeping, sidecars that cannot
vouch for bytes they were not written with, and no way out of the folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.backupstore import ChecksumMismatch, UnsafeKey
from shared.backupstore.local import LocalBackupStore

from .test_contract import KEY, TEN_A, sha


def every_file(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


async def test_a_failed_put_leaves_no_temp_file(tmp_path: Path) -> None:
    store = LocalBackupStore(tmp_path / "b")
    (tmp_path / "src").write_bytes(b"data")
    with pytest.raises(ChecksumMismatch):
        await store.put_file(KEY, tmp_path / "src", sha256=sha(b"other"))
    assert every_file(tmp_path / "b") == []
    await store.put_file(KEY, tmp_path / "src", sha256=sha(b"data"))
    name = KEY.rsplit("/", 1)[1]
    assert every_file(tmp_path / "b") == sorted([KEY, KEY.replace(name, f".{name}.meta")])
    assert [o.key for o in await store.list("")] == [KEY]  # the sidecar is not an object


async def test_a_file_replaced_behind_our_back_has_unknown_digests(tmp_path: Path) -> None:
    store = LocalBackupStore(tmp_path / "b")
    await store.put_bytes(KEY, b"original")
    path = tmp_path / "b" / KEY
    replacement = path.with_name("other")
    replacement.write_bytes(b"replaced")  # same size, another inode
    os.replace(replacement, path)
    obj = await store.stat(KEY)
    assert obj is not None and (obj.size, obj.sha256, obj.crc32) == (8, None, None)


async def test_a_purge_is_invisible_at_once_and_tidies_interrupted_ones(tmp_path: Path) -> None:
    store = LocalBackupStore(tmp_path / "b")
    await store.put_bytes(KEY, b"1")
    rec = KEY.split("/capture/")[0]
    stale = tmp_path / "b" / f"{rec}.deleting-dead".replace("rec_", ".rec_")
    stale.mkdir(parents=True)
    assert await store.delete_prefix(rec) == 1
    assert list((tmp_path / "b" / TEN_A).iterdir()) == []


async def test_symlinks_cannot_lead_out_of_the_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / TEN_A).symlink_to(outside)
    store = LocalBackupStore(tmp_path / "b")
    with pytest.raises(UnsafeKey):
        await store.put_bytes(KEY, b"x")
    assert list(outside.iterdir()) == []


async def test_an_unwritable_folder_fails_the_check(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    store = LocalBackupStore(blocker / "backup")
    with pytest.raises(Exception, match="could not write to") as caught:
        await store.check()
    assert caught.type.__name__ == "StoreRefused"
