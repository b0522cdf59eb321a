"""Transcoder settings (``RESGUARDO_TRANSCODER_*``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.config import CommonConfig, ConfigError, env_name, setting


@dataclass(frozen=True)
class TranscoderConfig(CommonConfig):
    transcoder_ack_wait_s: float = setting(
        60.0,
        "Seconds JetStream waits for the transcoder before redelivering a capture; long "
        "remuxes keep it alive with progress signals.",
    )
    transcoder_incomplete_attempts: int = setting(
        6,
        "Deliveries of capture.closed to wait for missing capture events before the "
        "recording is quarantined.",
    )
    transcoder_retry_delay_s: float = setting(
        2.0, "Seconds before a capture that is not complete yet is looked at again."
    )
    transcoder_concurrency: int = setting(1, "Recordings transcoded at the same time.")
    transcoder_max_write_bytes_per_s: int = setting(
        0,
        "Cap on how fast output files are written, to leave disk bandwidth to live captures; "
        "0 means no cap.",
    )

    transcoder_composite: bool = setting(
        True,
        "Also write composite.webm (composite.mp4 for mp4 destinations): a grid of every "
        "participant's video with the mixed audio of the call.",
    )
    signing_key_file: Path | None = setting(
        None,
        "The operator's Ed25519 private key (PEM) that signs manifest.json. "
        "Default: <data dir>/keys/signing-ed25519.key, created on first start.",
    )

    def validate(self) -> None:
        super().validate()
        if self.transcoder_ack_wait_s < 1:
            raise ConfigError(f"{env_name('transcoder_ack_wait_s')} must be at least 1 second.")
        if self.transcoder_incomplete_attempts < 1:
            raise ConfigError(f"{env_name('transcoder_incomplete_attempts')} must be at least 1.")
        if self.transcoder_retry_delay_s < 0:
            raise ConfigError(f"{env_name('transcoder_retry_delay_s')} must not be negative.")
        if self.transcoder_concurrency < 1:
            raise ConfigError(f"{env_name('transcoder_concurrency')} must be at least 1.")
        if self.transcoder_max_write_bytes_per_s < 0:
            raise ConfigError(
                f"{env_name('transcoder_max_write_bytes_per_s')} must not be negative."
            )
