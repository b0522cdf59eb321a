"""Master keys and the vault key: parsed strictly, created once with 0600, never echoed."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from services.credentials.keys import load_master_keys, load_vault_key, parse_master_keys
from shared.config import ConfigError


def _b64(n: int = 32) -> str:
    return base64.b64encode(os.urandom(n)).decode()


def test_parse_keeps_versions_and_picks_the_newest() -> None:
    keys = parse_master_keys(f"1:{_b64()}, 3:{_b64()},2:{_b64()}", "RESGUARDO_MASTER_KEYS")
    assert sorted(keys.keys) == [1, 2, 3] and keys.newest == 3
    assert len(keys.wrap_key(3)) == 64 and keys.wrap_key(3) != keys.wrap_key(2)
    assert keys.fingerprint_key(3) != keys.wrap_key(3)[:32]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nokey",
        "x:AAAA",
        "1:not base64!",
        f"1:{_b64(16)}",
        f"1:{_b64()},1:{_b64()}",
        f"0:{_b64()}",
    ],
)
def test_bad_entries_are_refused_without_echoing_them(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_master_keys(text, "RESGUARDO_MASTER_KEYS")
    message = str(info.value)
    assert "RESGUARDO_MASTER_KEYS" in message
    for part in text.replace(",", ":").split(":"):
        if len(part) > 8:
            assert part not in message


def test_a_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.keys"
    first = load_master_keys("", path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert first.newest == 1
    again = load_master_keys("", path)
    assert again.keys == first.keys


def test_environment_keys_win_over_the_file(tmp_path: Path) -> None:
    key = _b64()
    keys = load_master_keys(f"5:{key}", tmp_path / "absent.keys")
    assert keys.keys == {5: base64.b64decode(key)}
    assert not (tmp_path / "absent.keys").exists()


def test_vault_key_is_generated_once(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "vault-x25519.key"
    a = load_vault_key(path)
    b = load_vault_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    from shared.sealedbox import public_bytes

    assert public_bytes(a) == public_bytes(b)
