"""`resguardo keys show|rotate|rewrap|retire` and `resguardo destinations test`, run as a user
runs them (subprocesses) against the real API, vault and database."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from tests.api.support import ApiProcess, VaultProcess

from .test_cli import cli_env, ok_json, one_sentence_error, run


def key_env(api: ApiProcess, tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    values = {
        "RESGUARDO_DATA_DIR": str(api.data_dir),  # where the API keeps the signing key
        "RESGUARDO_MASTER_KEY_FILE": str(tmp_path / "vault-data" / "keys" / "master.keys"),
        "RESGUARDO_DATABASE_URL": database_url,
    }
    return cli_env(api, tmp_path, **(values | extra))


async def test_keys_show_prints_the_signing_public_key(
    api: ApiProcess, vault: VaultProcess, tmp_path: Path, database_url: str
) -> None:
    env = key_env(api, tmp_path, database_url)
    shown = ok_json(env, "keys", "show")
    served = await api.request("GET", "/v1/keys/signing")
    assert shown["signing"]["key_id"] == served.body["key_id"]
    assert shown["signing"]["public_key_pem"] == served.body["public_key_pem"]
    assert shown["master_keys"]["versions"] == [1]
    human = run(env, "keys", "show")
    assert human.returncode == 0, human.stderr
    assert served.body["key_id"] in human.stdout and "BEGIN PUBLIC KEY" in human.stdout
    assert "PRIVATE" not in human.stdout + human.stderr
    master = (tmp_path / "vault-data" / "keys" / "master.keys").read_text()
    secret_part = master.split(":", 1)[1].strip()
    assert secret_part not in human.stdout + json.dumps(shown)


@pytest.mark.usefixtures("uploader")  # it runs the destination tests
async def test_rotate_rewrap_retire(
    api: ApiProcess, vault: VaultProcess, tmp_path: Path, database_url: str
) -> None:
    env = key_env(api, tmp_path, database_url)
    for name in ("one", "two"):
        config = tmp_path / f"{name}.json"
        config.write_text(json.dumps({"path": str(tmp_path / "remote" / name)}))
        ok_json(env, "destinations", "add", name, "--provider", "file", "--config", str(config))

    line = one_sentence_error(run(env, "keys", "retire", "1"))
    assert "newest" in line

    rotated = ok_json(env, "keys", "rotate")
    assert rotated["new_version"] == 2 and rotated["versions"] == [1, 2]
    line = one_sentence_error(run(env, "keys", "retire", "1"))
    assert "still use master key version 1" in line and "rewrap" in line

    proc = run(env, "keys", "rewrap", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["rewrapped"], result["to_rewrap"], result["ok"]) == (2, 2, True)
    assert result["by_version"] == {"2": 2}
    assert "rewrap: 2 keys" in proc.stderr  # progress on stderr, JSON alone on stdout

    retired = ok_json(env, "keys", "retire", "1")
    assert retired == {"retired": 1, "versions": [2]}
    assert ok_json(env, "keys", "show")["master_keys"]["versions"] == [2]
    # The running vault still opens every destination (it re-read the key file).
    tested = ok_json(env, "destinations", "test", "one")
    assert tested["ok"] is True
    human = run(env, "keys", "rewrap")
    assert human.returncode == 0 and "Rewrapped 0 data key(s)" in human.stdout, human.stderr


async def test_keys_errors_are_one_sentence(
    api: ApiProcess, vault: VaultProcess, tmp_path: Path, database_url: str
) -> None:
    env_keys = "1:" + base64.b64encode(os.urandom(32)).decode()
    env = key_env(api, tmp_path, database_url, RESGUARDO_MASTER_KEYS=env_keys)
    line = one_sentence_error(run(env, "keys", "rotate"))
    assert "RESGUARDO_MASTER_KEYS" in line and env_keys[2:] not in line

    missing = key_env(
        api, tmp_path, database_url, RESGUARDO_MASTER_KEY_FILE=str(tmp_path / "none.keys")
    )
    line = one_sentence_error(run(missing, "keys", "rewrap"))
    assert "no master key file" in line

    no_db = cli_env(
        api,
        tmp_path,
        RESGUARDO_DATA_DIR=str(tmp_path / "empty-data"),
        RESGUARDO_MASTER_KEY_FILE=str(tmp_path / "vault-data" / "keys" / "master.keys"),
    )
    line = one_sentence_error(run(no_db, "keys", "retire", "1"))
    assert "no database found" in line


@pytest.mark.usefixtures("uploader")  # it runs the destination tests
async def test_destinations_test_command(
    api: ApiProcess, vault: VaultProcess, tmp_path: Path
) -> None:
    env = cli_env(api, tmp_path)
    config = tmp_path / "dest.json"
    config.write_text(json.dumps({"path": "relative/path"}))
    line = one_sentence_error(
        run(env, "destinations", "add", "rel", "--provider", "file", "--config", str(config))
    )
    assert "must be absolute" in line and "--no-probe" in line
    added = run(
        env,
        "destinations",
        "add",
        "rel",
        "--provider",
        "file",
        "--config",
        str(config),
        "--no-probe",
    )
    assert added.returncode == 0, added.stderr
    line = one_sentence_error(run(env, "destinations", "test", "rel"))
    assert "must be absolute" in line and "re-create the destination" in line

    config.write_text(json.dumps({"path": str(tmp_path / "remote")}))
    ok_json(env, "destinations", "add", "abs", "--provider", "file", "--config", str(config))
    human = run(env, "destinations", "test", "abs")
    assert human.returncode == 0, human.stderr
    assert human.stdout.startswith("Destination abs works:") and "deleted" in human.stdout
    line = one_sentence_error(run(env, "destinations", "test", "nothing"))
    assert "no destination nothing" in line
