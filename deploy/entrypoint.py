"""Container entrypoint of the Resguardo image: secrets from compose secrets, then the service.

Compose mounts each secret as a file under /run/secrets with the host file's owner and mode
(root, 0600), which the unprivileged service user cannot read, and some settings want a file
only their owner can read. So this starts as root, copies each secret it finds into a private
tmpfs folder owned by the service user, points the service's settings at the copies (the NATS
password through RESGUARDO_NATS_PASSWORD_FILE, PostgreSQL's through PGPASSFILE: no secret is in
any environment), drops to the service user and executes the command.
"""

from __future__ import annotations

import os
import pwd
import sys
from pathlib import Path

SECRETS = Path("/run/secrets")
PRIVATE = Path("/dev/shm/resguardo-secrets")  # tmpfs: never written to a disk or a layer
USER = "resguardo"
# secret file name -> the setting that names a file holding it
FILE_SETTINGS = {
    "master_keys": "RESGUARDO_MASTER_KEY_FILE",
    "nats_password": "RESGUARDO_NATS_PASSWORD_FILE",
    "backup_s3_secret": "RESGUARDO_BACKUP_S3_SECRET_ACCESS_KEY_FILE",
    "signing_key": "RESGUARDO_SIGNING_KEY_FILE",
    "tls_key": "RESGUARDO_TLS_KEY",
    "tls_cert": "RESGUARDO_TLS_CERT",
}


def private_copy(name: str, data: bytes, uid: int, gid: int) -> Path:
    PRIVATE.mkdir(mode=0o700, exist_ok=True)
    os.chown(PRIVATE, uid, gid)
    path = PRIVATE / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chown(path, uid, gid)
    return path


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: entrypoint COMMAND [ARG...]")
    env = dict(os.environ)
    user = pwd.getpwnam(USER)
    if os.geteuid() == 0 and SECRETS.is_dir():
        for name, setting in FILE_SETTINGS.items():
            if (SECRETS / name).is_file():
                copy = private_copy(name, (SECRETS / name).read_bytes(), user.pw_uid, user.pw_gid)
                env[setting] = str(copy)
        if (SECRETS / "postgres_password").is_file():
            # asyncpg reads PGPASSFILE: the password never has to be part of the database URL.
            password = (SECRETS / "postgres_password").read_text().strip()
            # pgpass fields escape ':' and '\\' with a backslash, or such a password never matches.
            escaped = password.replace("\\", "\\\\").replace(":", "\\:")
            line = f"*:*:*:*:{escaped}\n".encode()
            env["PGPASSFILE"] = str(private_copy("pgpass", line, user.pw_uid, user.pw_gid))
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
        env["HOME"] = user.pw_dir
    os.execvpe(argv[0], argv, env)  # noqa: S606 (the command is the image's, no shell wanted)


if __name__ == "__main__":
    main(sys.argv[1:])
