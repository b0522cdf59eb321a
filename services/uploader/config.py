"""The uploader's settings (``RESGUARDO_*``), on top of what every service shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.config import CommonConfig, ConfigError, env_name, setting

MIB = 1024 * 1024
S3_MIN_PART = 5 * MIB


@dataclass(frozen=True)
class UploaderConfig(CommonConfig):
    upload_max_attempts: int = setting(
        5, "Upload attempts per recording before it is retained (backup kept) as failed."
    )
    upload_part_size: int = setting(
        8 * MIB,
        "Multipart part size in bytes (S3 needs at least 5 MiB); also the most file data one "
        "upload holds in memory.",
    )
    upload_concurrency: int = setting(2, "Recordings uploaded at the same time.")
    upload_part_concurrency: int = setting(
        2,
        "Parts of one file in flight at once (S3 multipart); memory per upload is about "
        "(this + 1) x the part size.",
    )
    upload_backoff_s: float = setting(
        2.0, "Base of the exponential backoff (with jitter) between attempts, in seconds."
    )
    upload_ack_wait_s: float = setting(
        60.0,
        "Seconds without a heartbeat after which JetStream hands a job to another uploader "
        "(the uploader heartbeats every third of it while working).",
    )
    upload_grant_timeout_s: float = setting(
        5.0, "Seconds to wait for the credential vault's answer to a grant request."
    )
    signing_key_file: Path | None = setting(
        None,
        "The operator's Ed25519 private key (PEM) that signs manifest.json. "
        "Default: <data dir>/keys/signing-ed25519.key, created on first start.",
    )

    def validate(self) -> None:
        super().validate()
        if self.upload_max_attempts < 1:
            raise ConfigError(f"{env_name('upload_max_attempts')} must be at least 1.")
        if self.upload_part_size < S3_MIN_PART:
            raise ConfigError(
                f"{env_name('upload_part_size')} must be at least {S3_MIN_PART} (5 MiB), "
                "the smallest part S3 accepts."
            )
        if self.upload_concurrency < 1:
            raise ConfigError(f"{env_name('upload_concurrency')} must be at least 1.")
        if self.upload_part_concurrency < 1:
            raise ConfigError(f"{env_name('upload_part_concurrency')} must be at least 1.")
        if self.upload_backoff_s < 0:
            raise ConfigError(f"{env_name('upload_backoff_s')} must not be negative.")
        if self.upload_ack_wait_s < 3:
            raise ConfigError(f"{env_name('upload_ack_wait_s')} must be at least 3 seconds.")
        if self.upload_grant_timeout_s <= 0:
            raise ConfigError(f"{env_name('upload_grant_timeout_s')} must be positive.")
