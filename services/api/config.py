"""The API's settings (``RESGUARDO_*``), on top of what every service shares."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

from shared.config import CommonConfig, ConfigError, env_name, setting


@dataclass(frozen=True)
class ApiConfig(CommonConfig):
    api_host: str = setting("127.0.0.1", "Address the HTTPS API listens on.")
    api_port: int = setting(8443, "Port the HTTPS API listens on.")
    tls_cert: Path | None = setting(
        None, "TLS certificate (PEM) for the API. Unset: a self-signed one under <data dir>/tls."
    )
    tls_key: Path | None = setting(None, "TLS private key (PEM) matching RESGUARDO_TLS_CERT.")
    whip_public_url: str = setting(
        "https://127.0.0.1:8444",
        "Public base URL of the WHIP proxy; a recording's whip_url is <this>/whip/<id>. "
        "Several, comma-separated: each recording gets one of them (spread by its id).",
    )
    signing_key_file: Path | None = setting(
        None,
        "The operator's Ed25519 manifest-signing key (its public half is served at "
        "/v1/keys/signing). Default: <data dir>/keys/signing-ed25519.key, created once (0600).",
    )
    max_credential_chars: int = setting(
        5000,
        "Largest destination config body the API accepts before asking the vault (413 beyond).",
    )
    webhook_allow_private: bool = setting(
        False,
        "Let webhook endpoints be registered on loopback, private-network, CGNAT and link-local "
        "addresses, over plain http and on any port (development and tests only). Cloud "
        "metadata, multicast and reserved addresses stay refused.",
    )
    backup_capacity_bytes: int = setting(
        100 * 10**9,
        "Backup bytes a tenant may hold before /v1/usage warns (80%: warning, 100%: full); "
        "per tenant: PATCH /v1/tenants/{id}. Only a warning: no recording is ever refused.",
    )
    # --- dashboard sign-in (services/api/auth) ---
    signin_link_ttl_s: int = setting(
        86400, "Seconds a one-time sign-in link (from `resguardo users add`) stays valid."
    )
    session_ttl_s: int = setting(
        28800, "Seconds a dashboard session lasts after sign-in, however active (its cookie too)."
    )
    session_idle_s: int = setting(
        3600, "Seconds without a request after which a dashboard session ends (0: no idle limit)."
    )
    signin_window_s: int = setting(
        900, "The window, in seconds, over which failed sign-ins are counted for rate limiting."
    )
    signin_max_failures_per_email: int = setting(
        5, "Failed sign-ins for one email within the window before its sign-ins get 429."
    )
    signin_max_failures_per_address: int = setting(
        20, "Failed sign-ins from one client address within the window before it gets 429."
    )

    def validate(self) -> None:
        super().validate()
        if not self.database_url:
            raise ConfigError(
                f"{env_name('database_url')} is not set; start the system with `resguardo up` "
                "or point it at a PostgreSQL database."
            )
        if not 0 < self.api_port < 65536:
            raise ConfigError(f"{env_name('api_port')} must be a port number, not {self.api_port}.")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError(
                f"{env_name('tls_cert')} and {env_name('tls_key')} must be set together."
            )
        if not self.whip_bases or not all(
            u.startswith(("https://", "http://")) for u in self.whip_bases
        ):
            raise ConfigError(
                f"{env_name('whip_public_url')} must be an https:// (or http://) base URL."
            )
        if self.max_credential_chars < 256:
            raise ConfigError(f"{env_name('max_credential_chars')} must be at least 256.")
        if self.backup_capacity_bytes < 1:
            raise ConfigError(f"{env_name('backup_capacity_bytes')} must be at least 1 byte.")
        for name in ("signin_link_ttl_s", "session_ttl_s", "signin_window_s"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{env_name(name)} must be at least 1 second.")
        if self.session_idle_s < 0:
            raise ConfigError(f"{env_name('session_idle_s')} must be 0 (no limit) or more.")
        for name in ("signin_max_failures_per_email", "signin_max_failures_per_address"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{env_name(name)} must be at least 1.")

    @property
    def whip_bases(self) -> list[str]:
        return [u.strip().rstrip("/") for u in self.whip_public_url.split(",") if u.strip()]

    def whip_base_for(self, recording_id: str) -> str:
        """One of the proxies' base URLs, the same for every call about this recording."""
        bases = self.whip_bases
        return bases[zlib.crc32(recording_id.encode()) % len(bases)]
