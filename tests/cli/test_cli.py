"""The CLI as a user runs it: `.venv/bin/resguardo` subprocesses against the real API process
(and the real vault), checking --json output and one-sentence errors."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

from shared.embedded import free_port
from shared.tls import ensure_self_signed
from tests.api.support import ApiProcess, VaultProcess

RESGUARDO = str(Path(sys.executable).parent / "resguardo")


def cli_env(api: ApiProcess, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESGUARDO_")}
    env.update(
        RESGUARDO_DATA_DIR=str(tmp_path / "cli-data"),  # empty: nothing found by accident
        RESGUARDO_API_URL=api.url,
        RESGUARDO_API_TOKEN=api.dev_token,
        RESGUARDO_CA_FILE=str(api.ca_file),
    )
    env.update(extra)
    return env


def run(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RESGUARDO, *args], env=env, input=stdin, capture_output=True, text=True, timeout=120
    )


def ok_json(env: dict[str, str], *args: str, stdin: str | None = None) -> Any:
    proc = run(env, *args, "--json", stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # stdout is JSON and nothing else


def one_sentence_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # no traceback
    assert lines[0].startswith("resguardo: ")
    return lines[0]


async def test_destinations_and_recordings_round_trip(
    api: ApiProcess, vault: VaultProcess, tmp_path: Path
) -> None:
    env = cli_env(api, tmp_path)
    canary = "CANARY-" + secrets.token_hex(12)
    config = {"bucket": "recs", "access_key_id": "AKIDEXAMPLE", "secret_access_key": canary}
    added = run(
        env,
        "destinations",
        "add",
        "vault-s3",
        "--provider",
        "s3",
        "--config",
        "-",
        "--no-probe",
        "--json",
        stdin=json.dumps(config),
    )
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["secret_fields"] == ["access_key_id", "secret_access_key"]
    assert canary not in added.stdout + added.stderr

    config_file = tmp_path / "file-dest.json"
    config_file.write_text(json.dumps({"path": str(tmp_path / "remote")}))
    dest = ok_json(
        env,
        "destinations",
        "add",
        "local",
        "--provider",
        "file",
        "--config",
        str(config_file),
        "--no-probe",
    )
    assert dest["name"] == "local" and dest["provider"] == "file"

    listed = ok_json(env, "destinations", "list")
    assert sorted(d["name"] for d in listed) == ["local", "vault-s3"]
    shown = ok_json(env, "destinations", "show", "vault-s3")
    assert shown["config"] == {"bucket": "recs"}
    human = run(env, "destinations", "show", "vault-s3")
    assert human.returncode == 0 and "vault-s3" in human.stdout and canary not in human.stdout

    started = ok_json(env, "recordings", "start", "--destination", "local", "--label", "demo")
    rid = started["recording_id"]
    assert started["whip_url"].endswith(f"/whip/{rid}") and started["token"]
    assert started["state"] == "capturing"

    shown = ok_json(env, "recordings", "show", rid)
    assert shown["recording_id"] == rid and shown["label"] == "demo"
    assert [e["type"] for e in shown["events"]] == ["recording.started"]
    listed = ok_json(env, "recordings", "list")
    assert [r["recording_id"] for r in listed] == [rid]
    table = run(env, "recordings", "list")
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:2] == ["ID", "STATE"]
    assert rid in table.stdout

    stopped = ok_json(env, "recordings", "stop", rid)
    assert stopped["stop_requested"] is True
    again = run(env, "recordings", "stop", rid)
    assert again.returncode == 0 and "Stop requested" in again.stdout

    line = one_sentence_error(run(env, "recordings", "resend", rid))
    assert "capturing" in line and "uploaded or retained" in line

    deleted = ok_json(env, "destinations", "delete", "vault-s3")
    assert deleted["name"] == "vault-s3"
    line = one_sentence_error(run(env, "destinations", "show", "vault-s3"))
    assert canary not in line


async def test_one_sentence_errors(api: ApiProcess, vault: VaultProcess, tmp_path: Path) -> None:
    env = cli_env(api, tmp_path)
    line = one_sentence_error(run(env, "recordings", "show", "rec_" + "0" * 24))
    assert "No recording with this id" in line
    line = one_sentence_error(run(env, "recordings", "show", "../../etc/passwd"))
    assert "not a recording id" in line
    line = one_sentence_error(run(env, "recordings", "start", "--destination", "nowhere"))
    assert "no destination named 'nowhere'" in line

    bad = tmp_path / "bad.json"
    bad.write_text('{"secret_access_key": "CANARY-in-bad-json"')
    line = one_sentence_error(
        run(env, "destinations", "add", "d1", "--provider", "s3", "--config", str(bad))
    )
    assert "not valid JSON" in line and "CANARY" not in line
    line = one_sentence_error(
        run(env, "destinations", "add", "d1", "--provider", "s3", "--config", str(tmp_path / "no"))
    )
    assert "does not exist" in line

    wrong = cli_env(api, tmp_path, RESGUARDO_API_TOKEN="not-a-token")
    line = one_sentence_error(run(wrong, "recordings", "list"))
    assert "token is not valid" in line


async def test_api_down_and_untrusted_certificate(api: ApiProcess, tmp_path: Path) -> None:
    down = cli_env(api, tmp_path, RESGUARDO_API_URL=f"https://127.0.0.1:{free_port()}")
    line = one_sentence_error(run(down, "recordings", "list"))
    assert "Cannot reach the API at https://127.0.0.1:" in line
    assert "is `resguardo up` running?" in line

    other_cert, _ = ensure_self_signed(tmp_path / "other-ca")
    untrusted = cli_env(api, tmp_path, RESGUARDO_CA_FILE=str(other_cert))
    line = one_sentence_error(run(untrusted, "recordings", "list"))
    assert "does not trust" in line

    plain = cli_env(api, tmp_path, RESGUARDO_API_URL=api.url.replace("https://", "http://"))
    line = one_sentence_error(run(plain, "recordings", "list"))
    assert "must start with https://" in line


async def test_endpoints_file_from_resguardo_up(api: ApiProcess, tmp_path: Path) -> None:
    data_dir = tmp_path / "up-data"
    (data_dir / "run").mkdir(parents=True)
    (data_dir / "run" / "endpoints.json").write_text(
        json.dumps(
            {
                "api_url": api.url,
                "whip_base_url": "https://127.0.0.1:9444",
                "nats_url": "nats://127.0.0.1:4222",
                "ca_file": str(api.ca_file),
                "dev_token_file": str(api.data_dir / "secrets" / "dev-api-token"),
                "admin_token_file": str(api.data_dir / "secrets" / "admin-token"),
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESGUARDO_")}
    env["RESGUARDO_DATA_DIR"] = str(data_dir)
    assert ok_json(env, "recordings", "list") == []

    tenant = ok_json(env, "tenants", "add", "acme")
    assert tenant["name"] == "acme" and tenant["tenant_id"].startswith("ten_")
    # the new tenant's token works for its own (empty) tenant
    as_acme = {**env, "RESGUARDO_API_TOKEN": tenant["token"]}
    assert ok_json(as_acme, "recordings", "list") == []
    line = one_sentence_error(run(env, "tenants", "add", "acme"))
    assert "exists already" in line

    missing = {**env, "RESGUARDO_DATA_DIR": str(tmp_path / "nothing-here")}
    line = one_sentence_error(run(missing, "recordings", "list"))
    assert "resguardo up" in line
