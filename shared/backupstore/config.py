"""Which backup store to use, from ``RESGUARDO_BACKUP_*`` settings: a folder or an S3 bucket.

    RESGUARDO_BACKUP_URL                        file:///srv/backup or s3://bucket[/prefix]
    RESGUARDO_BACKUP_S3_ENDPOINT                http(s)://host:port (empty: AWS S3)
    RESGUARDO_BACKUP_S3_REGION                  us-east-1 unless set
    RESGUARDO_BACKUP_S3_ACCESS_KEY_ID
    RESGUARDO_BACKUP_S3_SECRET_ACCESS_KEY_FILE  a file (mode 0600 or stricter) with the secret

The secret is only ever read from a file: an environment variable is visible to every process
of the user (``/proc/<pid>/environ``) and to whatever dumps the environment on a crash, and an
argument to ``ps``. Each bad value stops the process with one sentence naming the variable, and
no sentence ever repeats a secret (nor a URL that could hold a password).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..config import ConfigError, env_name, load, setting
from .base import DEFAULT_PART_SIZE, BackupStore, check_prefix
from .errors import UnsafeKey

# S3's rules for a bucket name usable with path-style addressing.
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
URL = env_name("backup_url")
ENDPOINT = env_name("backup_s3_endpoint")
REGION = env_name("backup_s3_region")
ACCESS_KEY_ID = env_name("backup_s3_access_key_id")
SECRET_FILE = env_name("backup_s3_secret_access_key_file")


@dataclass(frozen=True)
class BackupStoreConfig:
    """The backup store's settings (documented like every other service setting)."""

    backup_url: str = setting(
        "",
        "Where the temporary backup lives: file:///path or s3://bucket[/prefix]. "
        "Empty: the folder RESGUARDO_BACKUP_DIR (default <data dir>/backup).",
    )
    backup_s3_endpoint: str = setting(
        "", "The S3-compatible store's URL (SeaweedFS, MinIO, Ceph); empty: AWS S3."
    )
    backup_s3_region: str = setting("us-east-1", "The S3 store's region.")
    backup_s3_access_key_id: str = setting("", "The S3 store's access key id.")
    backup_s3_secret_access_key_file: Path | None = setting(
        None, "A file (mode 0600 or stricter) holding the S3 store's secret access key."
    )


def from_env(default_root: Path, env: Mapping[str, str] | None = None) -> BackupStore:
    """The store the environment asks for; ``default_root`` when RESGUARDO_BACKUP_URL is unset."""
    cfg = load(BackupStoreConfig, env)
    if not cfg.backup_url:
        from .local import LocalBackupStore

        return LocalBackupStore(default_root)
    return from_url(
        cfg.backup_url,
        endpoint=cfg.backup_s3_endpoint,
        region=cfg.backup_s3_region,
        access_key_id=cfg.backup_s3_access_key_id,
        secret_access_key_file=cfg.backup_s3_secret_access_key_file,
    )


def from_url(
    url: str,
    *,
    endpoint: str = "",
    region: str = "us-east-1",
    access_key_id: str = "",
    secret_access_key_file: Path | None = None,
    part_size: int = DEFAULT_PART_SIZE,
) -> BackupStore:
    """Build the store for ``url`` (``file:///path`` or ``s3://bucket[/prefix]``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError(f"{URL} is not a valid URL.") from None
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"{URL} must not hold a user name or password; put the secret in the file named "
            f"by {SECRET_FILE}."
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"{URL} must not have a query (?) or fragment (#).")
    if parts.scheme == "file":
        return _local(parts.netloc, unquote(parts.path))
    if parts.scheme == "s3":
        return _s3(parts.netloc, parts.path, endpoint, region, access_key_id,
                   secret_access_key_file, part_size)  # fmt: skip
    raise ConfigError(f"{URL} must start with file:// or s3://.")


def _local(host: str, path: str) -> BackupStore:
    from .local import LocalBackupStore

    if host not in ("", "localhost"):
        raise ConfigError(f"{URL} must name a folder on this machine (file:///path), not {host!r}.")
    if not path.startswith("/"):
        raise ConfigError(f"{URL} must name an absolute folder, as in file:///srv/backup.")
    return LocalBackupStore(Path(path))


def _s3(
    bucket: str,
    path: str,
    endpoint: str,
    region: str,
    access_key_id: str,
    secret_file: Path | None,
    part_size: int,
) -> BackupStore:
    from .s3 import S3BackupStore

    if not BUCKET_RE.match(bucket) or ".." in bucket:
        raise ConfigError(
            f"{URL} must name a bucket of 3 to 63 lowercase letters, digits, '.' or '-', as in "
            "s3://resguardo-backup."
        )
    try:
        prefix = check_prefix(path.lstrip("/"))
    except UnsafeKey:
        raise ConfigError(
            f"{URL} has a prefix after the bucket that is not a plain path of safe segments."
        ) from None
    if endpoint:
        _check_endpoint(endpoint)
    if not re.fullmatch(r"[a-z0-9-]{1,64}", region or ""):
        raise ConfigError(f"{REGION} must be a region name such as us-east-1.")
    if not access_key_id or not re.fullmatch(r"[\x21-\x7e]{1,256}", access_key_id):
        raise ConfigError(f"{ACCESS_KEY_ID} must be set (printable, no spaces) for an s3:// URL.")
    secret = read_secret_file(secret_file)
    return S3BackupStore(
        bucket,
        prefix=prefix,
        endpoint=endpoint or None,
        region=region,
        access_key_id=access_key_id,
        secret_access_key=secret,
        part_size=part_size,
    )


def _check_endpoint(endpoint: str) -> None:
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise ConfigError(f"{ENDPOINT} is not a valid URL.") from None
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"{ENDPOINT} must not hold a user name or password; put the secret in the file "
            f"named by {SECRET_FILE}."
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{ENDPOINT} must be an http:// or https:// URL with a host name.")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"{ENDPOINT} must be only a scheme, a host and a port, with no path.")


def read_secret_file(path: Path | None) -> str:
    """The secret in ``path``: a regular file that only its owner can read or write."""
    if path is None or not str(path):
        raise ConfigError(f"{SECRET_FILE} must name the file with the secret for an s3:// URL.")
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigError(
            f"{SECRET_FILE} names a file that cannot be read ({exc.strerror})."
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{SECRET_FILE} must name a regular file.")
    if st.st_mode & 0o077:
        raise ConfigError(
            f"{SECRET_FILE} names a file that others can read or write "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); make it 0600 or stricter."
        )
    try:
        secret = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError):
        raise ConfigError(f"{SECRET_FILE} names a file that cannot be read as text.") from None
    if not secret or any(c.isspace() for c in secret):
        raise ConfigError(f"{SECRET_FILE} must name a file holding one secret, with no spaces.")
    return secret
