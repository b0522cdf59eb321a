"""The credential vault's settings (``RESGUARDO_*``), on top of what every service shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.config import CommonConfig, ConfigError, env_name, setting


@dataclass(frozen=True)
class VaultConfig(CommonConfig):
    master_keys: str = setting(
        "",
        "Master keys that wrap each destination's data key: comma list of "
        "<version>:<base64 32-byte key>; the highest version wraps new keys. "
        "Empty: read RESGUARDO_MASTER_KEY_FILE.",
        secret=True,
    )
    master_key_file: Path | None = setting(
        None,
        "File of master keys (same entries, one per line). Default: <data dir>/keys/master.keys, "
        "created 0600 with one random key if neither it nor RESGUARDO_MASTER_KEYS exists.",
    )
    vault_key_file: Path | None = setting(
        None,
        "The vault's X25519 private key (senders seal destination configs to it). "
        "Default: <data dir>/keys/vault-x25519.key, generated once (0600).",
    )
    max_credential_chars: int = setting(
        5000,
        "Largest secret part of a destination, in characters, that the vault stores (413 beyond).",
    )
    probe_timeout_s: float = setting(
        20.0,
        "Seconds a destination probe (an uploader writes, confirms and deletes a test object, on "
        "`destinations add` and `destinations test`) may take before it counts as failed; the "
        "vault waits that long plus up to 10 s for an uploader to take it.",
    )
    vault_concurrency: int = setting(
        64, "Vault requests (grants, creates, probes) handled at the same time."
    )

    @property
    def master_key_path(self) -> Path:
        return (self.master_key_file or self.data_dir / "keys" / "master.keys").resolve()

    @property
    def vault_key_path(self) -> Path:
        return (self.vault_key_file or self.data_dir / "keys" / "vault-x25519.key").resolve()

    def validate(self) -> None:
        super().validate()
        if not self.database_url:
            raise ConfigError(
                f"{env_name('database_url')} is not set; start the system with `resguardo up` "
                "or point it at a PostgreSQL database."
            )
        if self.max_credential_chars < 1:
            raise ConfigError(f"{env_name('max_credential_chars')} must be at least 1.")
        if self.probe_timeout_s <= 0:
            raise ConfigError(f"{env_name('probe_timeout_s')} must be positive.")
        if self.vault_concurrency < 1:
            raise ConfigError(f"{env_name('vault_concurrency')} must be at least 1.")
