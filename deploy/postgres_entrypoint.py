"""PostgreSQL from PyPI's pgserver, started like the official image (for hosts without registries).

Takes the official image's settings: POSTGRES_USER, POSTGRES_DB, POSTGRES_PASSWORD_FILE and
PGDATA (default /var/lib/postgresql/data). The first start initialises the cluster with that
user and password (scram-sha-256 over TCP, trust only on the container's own Unix socket) and
creates the database; then postgres runs in the foreground as the postgres user.
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import sys
from pathlib import Path

import pgserver

BIN = Path(pgserver.__file__).parent / "pginstall" / "bin"


def as_postgres(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def main() -> None:
    pgdata = Path(os.environ.get("PGDATA", "/var/lib/postgresql/data"))
    user = os.environ.get("POSTGRES_USER", "postgres")
    database = os.environ.get("POSTGRES_DB", user)
    for name, value in (("POSTGRES_USER", user), ("POSTGRES_DB", database)):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", value):  # quoted into SQL below
            sys.exit(f"{name} must be letters, digits and _ (at most 63), not {value!r}")
    pw = pwd.getpwnam("postgres")
    pgdata.mkdir(parents=True, exist_ok=True)
    os.chown(pgdata, pw.pw_uid, pw.pw_gid)
    pgdata.chmod(0o700)
    socket_dir = Path("/run/postgresql")
    socket_dir.mkdir(exist_ok=True)
    os.chown(socket_dir, pw.pw_uid, pw.pw_gid)
    if not (pgdata / "PG_VERSION").exists():
        secret = Path(os.environ.get("POSTGRES_PASSWORD_FILE", "/run/secrets/postgres_password"))
        pwfile = Path("/dev/shm/pgpw")  # initdb reads the password from a file, not argv
        pwfile.unlink(missing_ok=True)
        # Created 0600 (never readable by others, not even for a moment), removed even if
        # initdb fails.
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secret.read_bytes().strip() + b"\n")
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)

        def run(args: list[str], stdin: bytes | None = None) -> None:
            subprocess.run(
                args, input=stdin, check=True, preexec_fn=lambda: as_postgres(pw.pw_uid, pw.pw_gid)
            )

        try:
            run([str(BIN / "initdb"), "-D", str(pgdata), "-U", user, f"--pwfile={pwfile}",
                 "--auth-host=scram-sha-256", "--auth-local=trust", "--encoding=UTF8"])  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        with (pgdata / "pg_hba.conf").open("a") as hba:
            hba.write("host all all all scram-sha-256\n")
        if database != "postgres":  # initdb makes only postgres (and the templates)
            create = f'CREATE DATABASE "{database}" OWNER "{user}";\n'.encode()
            run([str(BIN / "postgres"), "--single", "-D", str(pgdata), "postgres"], create)
    as_postgres(pw.pw_uid, pw.pw_gid)
    args = [str(BIN / "postgres"), "-D", str(pgdata), "-c", "listen_addresses=*",
            "-k", str(socket_dir)]  # fmt: skip
    os.execv(args[0], args + sys.argv[1:])  # noqa: S606 (no shell: nothing to quote)


if __name__ == "__main__":
    main()
