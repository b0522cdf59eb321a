"""Master key administration: what ``resguardo keys rotate|rewrap|retire`` do.

Why a local tool and not an RPC to the vault: the master keys are a file on the vault's host
(or ``RESGUARDO_MASTER_KEYS`` in its environment). Whoever manages them already has that host;
an RPC would add a network path to key management (through the API and NATS) that an attacker
holding an admin token or a service's NATS login could use, for no gain. So these run as the
operator, on that host, against the key file and the database directly, and work whether the
system is up or down:

- the running vault re-reads the key file whenever it changes (``keys.KeyRing``), so a rotated
  version wraps new data keys at once and rewrapped rows open without a restart;
- ``rewrap`` unwraps only the 64-byte data keys, never the secrets' ciphertexts: no plaintext
  credential exists at any point; each row is updated by compare-and-swap, so a destination
  created, deleted or rewrapped concurrently is never clobbered, and running it twice is a no-op;
- ``retire`` refuses while any data key still uses the version, and never retires the newest.

Crypto-shredding and backups: deleting a destination deletes its wrapped data key, so copies of
its ciphertext (events, logs, dumps of that column) are unreadable. A full database backup still
holds the wrapped key, which the master key version that wrapped it can open; ``rotate``,
``rewrap`` and then ``retire`` of the old version make every backup taken before the rewrap
unreadable as well.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from shared.config import CommonConfig, env_name, load

from . import aead, crypto, reckeys, store, webhook_store
from .config import VaultConfig
from .keys import (
    MASTER_KEY_LEN,
    MasterKeys,
    format_master_keys,
    key_file_lock,
    load_master_keys,
    parse_master_keys,
    replace_secret_file,
)

Progress = Callable[[int, int], None]


class KeyAdminError(Exception):
    """The key operation was refused or cannot run; the message says why and what to do."""


@dataclass(frozen=True)
class KeyAdminConfig(VaultConfig):
    """The vault's settings, without requiring a database URL (the embedded one is found in the
    data dir)."""

    def validate(self) -> None:
        CommonConfig.validate(self)


def load_config(env: Mapping[str, str] | None = None) -> KeyAdminConfig:
    return load(KeyAdminConfig, env)


@dataclass(frozen=True)
class KeySource:
    env_value: str = field(repr=False)
    key_file: Path

    @property
    def from_env(self) -> bool:
        return bool(self.env_value.strip())

    @property
    def where(self) -> str:
        return env_name("master_keys") if self.from_env else str(self.key_file)

    def load(self) -> MasterKeys:
        """The current keys; never creates a key file (only the vault does, on first start)."""
        if not self.from_env and not self.key_file.exists():
            raise KeyAdminError(
                f"there is no master key file at {self.key_file} yet; start the system once "
                f"(`resguardo up`) or set {env_name('master_key_file')} to the vault's key file"
            )
        try:
            return load_master_keys(self.env_value, self.key_file)
        except OSError as exc:
            raise KeyAdminError(
                f"cannot read the master key file {self.key_file} ({exc.strerror}); run this as "
                "the user that runs the vault"
            ) from None


def source_of(config: VaultConfig) -> KeySource:
    return KeySource(env_value=config.master_keys, key_file=config.master_key_path)


# --- rotate ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RotateResult:
    new_version: int
    versions: list[int]
    key_file: str


def rotate(source: KeySource) -> RotateResult:
    """Add a new random master key version to the key file; it wraps every new data key."""
    if source.from_env:
        raise KeyAdminError(
            f"the master keys come from {env_name('master_keys')}, which this command cannot "
            "change; append a new `<version>:<key>` entry (make the key with `openssl rand "
            "-base64 32`) there, restart the vault, then run `resguardo keys rewrap`"
        )
    with key_file_lock(source.key_file):
        keys = source.load()
        new_version = keys.newest + 1
        added = {**keys.keys, new_version: secrets.token_bytes(MASTER_KEY_LEN)}
        replace_secret_file(source.key_file, format_master_keys(MasterKeys(added)))
        # Read back what is on disk: the result reports the file, not our intention.
        written = parse_master_keys(source.key_file.read_text(), str(source.key_file))
    if written.newest != new_version:
        raise KeyAdminError(f"the key file {source.key_file} did not keep the new version")
    return RotateResult(
        new_version=new_version, versions=sorted(written.keys), key_file=str(source.key_file)
    )


# --- rewrap ------------------------------------------------------------------------------------


@dataclass
class TableRewrap:
    """One table of wrapped data keys after a rewrap."""

    to_rewrap: int = 0
    rewrapped: int = 0
    failed: list[str] = field(default_factory=list)  # row names whose key did not open
    by_version: dict[int, int] = field(default_factory=dict)  # after the run


@dataclass
class RewrapResult:
    newest_version: int
    changed_meanwhile: int = 0  # deleted or rewrapped by someone else while we worked
    unknown_version: dict[int, int] = field(default_factory=dict)  # version -> rows
    # Failures by destination id, recording id and "<endpoint>/<secret id>" respectively.
    destinations: TableRewrap = field(default_factory=TableRewrap)
    recordings: TableRewrap = field(default_factory=TableRewrap)
    webhook_secrets: TableRewrap = field(default_factory=TableRewrap)

    @property
    def ok(self) -> bool:
        tables = (self.destinations, self.recordings, self.webhook_secrets)
        return not (self.unknown_version or any(t.failed for t in tables))


@dataclass(frozen=True)
class _WrappedKeys:
    """One table of wrapped data keys, as the rewrap loop sees it (no ciphertext is read)."""

    counts: Callable[[asyncpg.Pool], Awaitable[dict[int, int]]]
    rows_not_at: Callable[..., Awaitable[Sequence[Any]]]
    key_of: Callable[[Any], str]  # the row's sort key (paging) and its name in failures
    rewrap: Callable[[MasterKeys, Any, int], bytes]
    replace: Callable[[asyncpg.Pool, Any, bytes, int], Awaitable[bool]]


DESTINATIONS = _WrappedKeys(
    counts=store.key_version_counts,
    rows_not_at=store.wrapped_keys_not_at,
    key_of=lambda row: row.destination_id,
    rewrap=lambda keys, row, new: crypto.rewrap_data_key(
        keys, row.tenant_id, row.destination_id, row.wrapped_key, row.key_version, new
    ),
    replace=store.replace_wrapped_key,
)
RECORDING_KEYS = _WrappedKeys(
    counts=reckeys.key_version_counts,
    rows_not_at=reckeys.rows_not_at,
    key_of=lambda row: row.recording_id,
    rewrap=reckeys.rewrap,
    replace=reckeys.replace_wrapped_key,
)
WEBHOOK_SECRETS = _WrappedKeys(
    counts=webhook_store.key_version_counts,
    rows_not_at=webhook_store.wrapped_keys_not_at,
    key_of=lambda row: row.aad_id,
    rewrap=lambda keys, row, new: crypto.rewrap_data_key(
        keys, row.tenant_id, row.aad_id, row.wrapped_key, row.key_version, new
    ),
    replace=webhook_store.replace_wrapped_key,
)


async def _rewrap_table(
    table: _WrappedKeys,
    pool: asyncpg.Pool,
    keys: MasterKeys,
    result: RewrapResult,
    batch: int,
    on_progress: Progress | None = None,
) -> TableRewrap:
    """Every row of ``table`` not under the newest version, unwrapped and wrapped again one by
    one, each stored by compare-and-swap; unknown versions and concurrent changes go to
    ``result``, which the three tables share."""
    newest = keys.newest
    counts = TableRewrap()
    before = await table.counts(pool)
    counts.to_rewrap = sum(n for v, n in before.items() if v != newest)
    done = 0
    after = ""
    while counts.to_rewrap:
        rows = await table.rows_not_at(pool, newest, after=after, limit=batch)
        if not rows:
            break
        for row in rows:
            after = table.key_of(row)
            done += 1
            try:
                wrapped = table.rewrap(keys, row, newest)
            except crypto.UnknownKeyVersion as exc:
                result.unknown_version[exc.version] = result.unknown_version.get(exc.version, 0) + 1
                continue
            except aead.AeadError:
                counts.failed.append(after)
                continue
            if await table.replace(pool, row, wrapped, newest):
                counts.rewrapped += 1
            else:
                result.changed_meanwhile += 1
            if on_progress is not None:
                on_progress(done, max(counts.to_rewrap, done))
    counts.by_version = await table.counts(pool)
    return counts


async def rewrap(
    pool: asyncpg.Pool, keys: MasterKeys, *, on_progress: Progress | None = None, batch: int = 500
) -> RewrapResult:
    """Re-wrap every data key that is not under the newest master key version: destinations',
    recordings' and webhook secrets'. No secret, media or ciphertext is decrypted."""
    result = RewrapResult(newest_version=keys.newest)
    if not await store.schema_exists(pool):
        return result
    result.destinations = await _rewrap_table(DESTINATIONS, pool, keys, result, batch, on_progress)
    result.recordings = await _rewrap_table(RECORDING_KEYS, pool, keys, result, batch)
    result.webhook_secrets = await _rewrap_table(WEBHOOK_SECRETS, pool, keys, result, batch)
    return result


# --- retire ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetireResult:
    retired: int
    versions: list[int]
    key_file_changed: bool


async def retire(pool: asyncpg.Pool, source: KeySource, version: int) -> RetireResult:
    """Remove master key ``version``, refusing while any data key still uses it."""
    keys = source.load()
    if not keys.has(version):
        raise KeyAdminError(
            f"master key version {version} is not in {source.where} (it has "
            f"{', '.join(map(str, sorted(keys.keys)))}); nothing to retire"
        )
    if version == keys.newest:
        raise KeyAdminError(
            f"version {version} is the newest master key and wraps every new data key; "
            "run `resguardo keys rotate` and `resguardo keys rewrap` first"
        )
    in_use = recordings = hooks = 0
    if await store.schema_exists(pool):
        in_use = (await store.key_version_counts(pool)).get(version, 0)
        recordings = (await reckeys.key_version_counts(pool)).get(version, 0)
        hooks = (await webhook_store.key_version_counts(pool)).get(version, 0)
    if in_use or recordings or hooks:
        raise KeyAdminError(
            f"{in_use} destination data key(s), {recordings} recording data key(s) and {hooks} "
            f"webhook secret(s) still use master key version {version}; run `resguardo keys "
            "rewrap` first"
        )
    if source.from_env:
        raise KeyAdminError(
            f"no data key uses version {version} any more, but the keys come from "
            f"{env_name('master_keys')}: remove the `{version}:` entry there and restart the "
            "vault to retire it"
        )
    with key_file_lock(source.key_file):
        current = source.load()
        if version == current.newest:  # rotated away and back meanwhile: re-check
            raise KeyAdminError(f"version {version} became the newest master key; retry")
        kept = {v: k for v, k in current.keys.items() if v != version}
        replace_secret_file(source.key_file, format_master_keys(MasterKeys(kept)))
    return RetireResult(retired=version, versions=sorted(kept), key_file_changed=True)


# --- the database ------------------------------------------------------------------------------


@contextlib.contextmanager
def database_url(config: VaultConfig) -> Iterator[str]:
    """RESGUARDO_DATABASE_URL, or the embedded PostgreSQL under the data dir (attached to if
    `resguardo up` runs it, started for the duration of the command if not)."""
    if config.database_url:
        yield config.database_url
        return
    pgdata = (config.data_dir / "postgres").resolve()
    if not pgdata.is_dir():
        raise KeyAdminError(
            f"no database found: {pgdata} does not exist; set {env_name('database_url')} or "
            f"{env_name('data_dir')} to the system's"
        )
    from shared.embedded import Postgres

    running = Postgres.running_url(pgdata)
    if running is not None:  # `resguardo up` runs it: use it, leave it running
        yield running
        return
    pg = Postgres(pgdata).start()
    try:
        yield pg.url
    finally:
        pg.stop()
