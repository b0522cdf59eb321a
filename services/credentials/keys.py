"""The vault's keys: versioned master keys (they wrap data keys) and its X25519 key.

Master keys come from ``RESGUARDO_MASTER_KEYS`` (``version:base64key,...``) or from a key file
(same entries, one per line). With neither, a key file with one random version-1 key is created
(0600). The newest version wraps new data keys; older versions stay to unwrap older rows.

Sub-keys are derived with HKDF-SHA-256 so each purpose has its own key: wrapping data keys
(64 bytes, for A256CBC-HS512) and fingerprinting secrets (32 bytes, for HMAC-SHA-256).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import logging
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from shared.config import ConfigError, env_name
from shared.files import write_private

log = logging.getLogger(__name__)

MASTER_KEY_LEN = 32
_WRAP_INFO = b"resguardo vault data-key wrap v1"
_FINGERPRINT_INFO = b"resguardo vault fingerprint v1"


def _hkdf(master: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(master)


@dataclass(frozen=True)
class MasterKeys:
    keys: dict[int, bytes] = field(repr=False)
    # Derived wrap keys, made once per version: an HKDF per grant was a tenth of its crypto time.
    # They are no more secret than the master keys this object already holds for its lifetime.
    _wrap_keys: dict[int, bytes] = field(default_factory=dict, repr=False, compare=False)

    @property
    def newest(self) -> int:
        return max(self.keys)

    def has(self, version: int) -> bool:
        return version in self.keys

    def wrap_key(self, version: int) -> bytes:
        """64-byte A256CBC-HS512 key that wraps data keys under master key ``version``."""
        key = self._wrap_keys.get(version)
        if key is None:
            key = self._wrap_keys[version] = _hkdf(self.keys[version], _WRAP_INFO, 64)
        return key

    def fingerprint_key(self, version: int) -> bytes:
        return _hkdf(self.keys[version], _FINGERPRINT_INFO, 32)


def parse_master_keys(text: str, source: str) -> MasterKeys:
    """Entries ``version:base64key`` separated by commas or newlines. Errors name ``source`` and
    the entry's position, never its value."""
    keys: dict[int, bytes] = {}
    entries = [e.strip() for e in text.replace("\n", ",").split(",")]
    entries = [e for e in entries if e and not e.startswith("#")]
    for n, entry in enumerate(entries, 1):
        version_text, sep, b64 = entry.partition(":")
        if not sep or not version_text.strip().isdigit():
            raise ConfigError(
                f"{source}: entry {n} must look like <version>:<base64 key>, e.g. 1:AAAA...="
            )
        version = int(version_text)
        try:
            key = base64.b64decode(b64.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{source}: entry {n} is not valid base64.") from None
        if len(key) != MASTER_KEY_LEN:
            raise ConfigError(
                f"{source}: entry {n} must decode to {MASTER_KEY_LEN} bytes "
                "(make one with `openssl rand -base64 32`)."
            )
        if version < 1 or version in keys:
            raise ConfigError(f"{source}: entry {n} has a version that is below 1 or repeated.")
        keys[version] = key
    if not keys:
        raise ConfigError(f"{source} holds no master key.")
    return MasterKeys(keys)


def write_secret_file(path: Path, data: bytes) -> bool:
    """Create ``path`` (mode 0600, parents 0700) holding ``data``, atomically: True if we made it,
    False if it already existed (another process won the race; its content is kept)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails if it exists: never overwrite a key
        except FileExistsError:
            return False
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _warn_if_open(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "key file is readable by other users; chmod 600 it",
            extra={"path": str(path)},
        )


def load_master_keys(env_value: str, key_file: Path) -> MasterKeys:
    if env_value.strip():
        return parse_master_keys(env_value, env_name("master_keys"))
    if not key_file.exists():
        key = base64.b64encode(secrets.token_bytes(MASTER_KEY_LEN)).decode()
        if write_secret_file(key_file, f"1:{key}\n".encode()):
            log.info(
                "created a new master key file with key version 1; back it up: without it "
                "no stored destination can be decrypted",
                extra={"path": str(key_file)},
            )
    _warn_if_open(key_file)
    return parse_master_keys(key_file.read_text(), str(key_file))


def format_master_keys(keys: MasterKeys) -> bytes:
    """The key file's text for ``keys``: one ``version:base64key`` line per version."""
    lines = [f"{v}:{base64.b64encode(keys.keys[v]).decode()}" for v in sorted(keys.keys)]
    return ("\n".join(lines) + "\n").encode()


def replace_secret_file(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data`` (mode 0600): a crash leaves the old file or the
    new one, never a mix. Used only to add or retire master key versions."""
    write_private(path, data)


@contextlib.contextmanager
def key_file_lock(path: Path) -> Iterator[None]:
    """Serialise changes to the key file (two `resguardo keys rotate` at once)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


class KeyRing:
    """The vault's master keys, re-read whenever the key file changes.

    ``resguardo keys rotate`` and ``retire`` edit the key file while the vault may be running;
    each use of the ring stats the file (about a microsecond) and re-parses it when its inode,
    size or mtime moved, so a new version wraps new data keys at once and rows rewrapped to it
    can be opened. Keys from ``RESGUARDO_MASTER_KEYS`` never change without a restart. A key
    file that becomes unreadable or invalid keeps the last good ring (and says so in the log).
    """

    def __init__(self, env_value: str, key_file: Path) -> None:
        self.from_env = bool(env_value.strip())
        self.key_file = key_file
        self._signature: tuple[int, int, int] | None = None
        self._keys = load_master_keys(env_value, key_file)
        if not self.from_env:
            self._signature = self._stat()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.key_file)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def current(self) -> MasterKeys:
        if self.from_env:
            return self._keys
        signature = self._stat()
        if signature is None or signature == self._signature:
            return self._keys
        try:
            keys = parse_master_keys(self.key_file.read_text(), str(self.key_file))
        except (OSError, ConfigError) as exc:
            log.error(
                "the master key file changed but cannot be used; keeping the keys loaded "
                "before; fix the file",
                extra={"path": str(self.key_file), "reason": str(exc)},
            )
            self._signature = signature
            return self._keys
        self._signature = signature
        if keys.keys != self._keys.keys:
            log.info(
                "master key file re-read",
                extra={"key_versions": sorted(keys.keys), "newest_key_version": keys.newest},
            )
        self._keys = keys
        return keys


def load_vault_key(path: Path) -> X25519PrivateKey:
    """The vault's X25519 private key (raw 32 bytes in ``path``), generated once."""
    if not path.exists():
        key = X25519PrivateKey.generate()
        raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        if write_secret_file(path, raw):
            log.info("created the vault's X25519 key", extra={"path": str(path)})
    _warn_if_open(path)
    raw = path.read_bytes()
    if len(raw) != 32:
        raise ConfigError(f"{path} must hold a raw 32-byte X25519 private key; restore it.")
    return X25519PrivateKey.from_private_bytes(raw)
