"""`resguardo nats-config`: the compose cluster's NATS configs come from the embedded server's code
(same users and rights, sync_interval: always), and nats-server itself accepts them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from shared.embedded import OPERATOR, SERVICE_RIGHTS, nats_server_binary, service_user

from ..servers import REPO


def test_configs_for_a_three_node_cluster(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for user in [*SERVICE_RIGHTS, OPERATOR]:
        (secrets / f"nats_{user}").write_text(f"pw-{user}-123\n")
    out = tmp_path / "config"
    result = subprocess.run(
        [sys.executable, "-m", "resguardo", "nats-config", "--cluster", "3",
         "--secrets-dir", str(secrets), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "pw-" not in result.stdout + result.stderr  # no password is ever printed
    for i in (1, 2, 3):
        path = out / f"nats-{i}.conf"
        assert path.stat().st_mode & 0o777 == 0o600
        text = path.read_text()
        assert "sync_interval: always" in text
        peers = [f"nats-route://nats-{j}:6222" for j in (1, 2, 3) if j != i]
        assert f"routes: [{', '.join(peers)}]" in text
        assert f"server_name: resguardo-{i}" in text
        for name in SERVICE_RIGHTS:  # exactly the embedded server's rights
            user = service_user(name, f"pw-{name}-123")
            assert f'"{user.publish[-1]}"' in text and f'user: "{name}"' in text
        check = subprocess.run(
            [nats_server_binary(), "-t", "-c", str(path)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr


def test_a_missing_password_file_is_one_sentence(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "resguardo", "nats-config", "--secrets-dir", str(tmp_path),
         "--out", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Cannot read NATS password file" in result.stderr and "Traceback" not in result.stderr
