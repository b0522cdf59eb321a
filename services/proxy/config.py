"""The proxy's settings (``RESGUARDO_*``): where WHIP listens, TLS, segment length, ICE servers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.config import CommonConfig, ConfigError, env_name, setting


@dataclass(frozen=True)
class ProxyConfig(CommonConfig):
    whip_host: str = setting("127.0.0.1", "Address the proxy's WHIP endpoint listens on.")
    whip_port: int = setting(8444, "HTTPS port of the proxy's WHIP endpoint.")
    tls_cert: Path | None = setting(
        None, "TLS certificate (PEM) for HTTPS. Default: a self-signed one under <data dir>/tls."
    )
    tls_key: Path | None = setting(
        None, "TLS private key (PEM) for HTTPS. Default: the self-signed one's key."
    )
    segment_seconds: float = setting(
        5.0, "Length of one capture segment; video segments end at the next keyframe after it."
    )
    ice_servers: tuple[str, ...] = setting(
        (), "Comma-separated STUN/TURN URLs for the proxy's ICE. Empty: host candidates only."
    )
    ice_username: str = setting("", "Username for the TURN servers in RESGUARDO_ICE_SERVERS.")
    ice_credential: str = setting(
        "", "Credential for the TURN servers in RESGUARDO_ICE_SERVERS.", secret=True
    )
    max_publishers: int = setting(
        100, "Most WHIP sessions the proxy runs at once; more are refused with 503."
    )
    connect_timeout_seconds: float = setting(
        30.0, "A WHIP session whose media has not connected within this time is ended."
    )
    udp_receive_buffer_bytes: int = setting(
        4 * 1024 * 1024,
        "Receive buffer asked for each media UDP socket (the kernel caps it at "
        "net.core.rmem_max): room to ride out a short stall of the proxy without dropping "
        "packets. 0 keeps the system default.",
    )
    whip_instance_url: str = setting(
        "",
        "This proxy instance's own base URL, reachable by publishers without the load balancer "
        "(https://host:port): WHIP resource URLs (Location) point at it, so PATCH and DELETE "
        "reach the instance that holds the session. Empty: relative resource URLs.",
    )
    proxy_close_wait_s: float = setting(
        15.0,
        "On a stop, how long the instance that closes the capture waits for the other proxy "
        "instances to end their sessions of the recording; what is still open then belonged to "
        "an instance that is gone, and is ended on its behalf.",
    )
    capture_discard: bool = setting(
        False,
        "Benchmark only (bench/bench_proxy.py's receive-only baseline): receive every frame and "
        "drop it. Nothing is recorded; never set it in a real deployment.",
    )

    def validate(self) -> None:
        super().validate()
        if not 0.2 <= self.segment_seconds <= 3600:
            raise ConfigError(f"{env_name('segment_seconds')} must be between 0.2 and 3600.")
        if self.udp_receive_buffer_bytes < 0:
            raise ConfigError(f"{env_name('udp_receive_buffer_bytes')} must not be negative.")
        if self.whip_instance_url and not self.whip_instance_url.startswith(
            ("https://", "http://")
        ):
            raise ConfigError(f"{env_name('whip_instance_url')} must be an https:// base URL.")
        if not 0 <= self.proxy_close_wait_s <= 600:
            raise ConfigError(f"{env_name('proxy_close_wait_s')} must be between 0 and 600.")
        if self.max_publishers < 1:
            raise ConfigError(f"{env_name('max_publishers')} must be at least 1.")
        if not 1 <= self.whip_port <= 65535:
            raise ConfigError(f"{env_name('whip_port')} must be a TCP port (1-65535).")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError(
                f"set both {env_name('tls_cert')} and {env_name('tls_key')}, or neither."
            )
        for url in self.ice_servers:
            if not url.startswith(("stun:", "turn:", "turns:")):
                raise ConfigError(
                    f"{env_name('ice_servers')} entries must start with stun:, turn: or turns:."
                )
        if self.connect_timeout_seconds <= 0:
            raise ConfigError(f"{env_name('connect_timeout_seconds')} must be positive.")
