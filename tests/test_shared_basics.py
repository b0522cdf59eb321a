"""Config errors name the variable; logs redact secrets; backup paths never leave their folder."""

from __future__ import annotations

import io
import json
import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from shared import logs
from shared.backup import UnsafePath, capture_dir, inside, recording_dir
from shared.config import CommonConfig, ConfigError, load
from shared.ids import new_recording_id, new_tenant_id, slugify

from .servers import REPO


def test_bad_config_value_is_one_sentence_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="RESGUARDO_LOG_LEVEL must be"):
        load(CommonConfig, {"RESGUARDO_LOG_LEVEL": "LOUD"})
    with pytest.raises(ConfigError, match="RESGUARDO_NATS_URL must be nats:// or tls://"):
        load(CommonConfig, {"RESGUARDO_NATS_URL": "http://x"})
    with pytest.raises(ConfigError, match="RESGUARDO_NATS_URL must be nats:// or tls://"):
        load(CommonConfig, {"RESGUARDO_NATS_URL": "nats://a:4222, http://b:4222"})
    with pytest.raises(ConfigError, match="RESGUARDO_STREAM_REPLICAS must be from 1 to 5"):
        load(CommonConfig, {"RESGUARDO_STREAM_REPLICAS": "0"})
    several = load(CommonConfig, {"RESGUARDO_NATS_URL": "nats://a:4222,nats://b:4223"})
    assert several.nats_urls == ["nats://a:4222", "nats://b:4223"]


def test_up_refuses_a_busy_port_with_the_variable_to_change(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {
            "RESGUARDO_DATA_DIR": str(tmp_path),
            "RESGUARDO_API_PORT": str(port),
            "PATH": "/usr/bin:/bin",
        }
        result = subprocess.run(
            [sys.executable, "-m", "resguardo", "up"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"port {port} is already in use" in result.stderr
    assert "RESGUARDO_API_PORT" in result.stderr and "Traceback" not in result.stderr


def _log_line(**extra: object) -> dict[str, object]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter("test"))
    logger = logging.getLogger("redaction-test")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.warning("upload to https://user:hunter2@example.com failed, Bearer abc.def", extra=extra)
    return json.loads(stream.getvalue())  # type: ignore[no-any-return]


def test_logs_redact_secret_fields_and_values() -> None:
    line = _log_line(
        secret_access_key="CANARY-1",
        password="CANARY-2",
        config={"session_token": "CANARY-3", "bucket": "b"},
        whip_token_sha256="ab" * 32,
    )
    text = json.dumps(line)
    assert "CANARY" not in text and "hunter2" not in text and "abc.def" not in text
    assert line["config"] == {"session_token": "[redacted]", "bucket": "b"}
    assert line["whip_token_sha256"] == "ab" * 32  # a hash is not a secret


def test_backup_paths_cannot_escape() -> None:
    root = Path("/srv/backup")
    rec = recording_dir(root, new_tenant_id(), new_recording_id())
    for bad in ("../x", "/etc/passwd", "a/../../b", "x\x00y"):
        with pytest.raises(UnsafePath):
            inside(rec, bad)
    for bad_id in ("../rec", "rec_/../x", ""):
        with pytest.raises(UnsafePath):
            recording_dir(root, new_tenant_id(), bad_id)
    with pytest.raises(UnsafePath):
        capture_dir(rec, "..", "t")


@pytest.mark.parametrize(
    "name", ["../../etc", "a/b", "\uff45\uff56\uff49\uff4c\uff0f..", "x\x00y", "…", "名前"]
)
def test_slugify_never_yields_a_path_trick(name: str) -> None:
    slug = slugify(name)
    assert "/" not in slug and "." not in slug and "\x00" not in slug and slug


def test_nats_password_from_a_file_keeps_it_out_of_the_environment(tmp_path: Path) -> None:
    secret = tmp_path / "nats_password"
    secret.write_text("canary-nats-pw\n")
    cfg = load(CommonConfig, {"RESGUARDO_NATS_PASSWORD_FILE": str(secret)})
    assert cfg.nats_login_password() == "canary-nats-pw"
    assert "canary-nats-pw" not in repr(cfg)
    both = {"RESGUARDO_NATS_PASSWORD": "direct", "RESGUARDO_NATS_PASSWORD_FILE": str(secret)}
    assert load(CommonConfig, both).nats_login_password() == "direct"
    assert load(CommonConfig, {}).nats_login_password() is None
    missing = load(CommonConfig, {"RESGUARDO_NATS_PASSWORD_FILE": str(tmp_path / "none")})
    with pytest.raises(ConfigError, match="RESGUARDO_NATS_PASSWORD_FILE"):
        missing.nats_login_password()
