"""The notifier's settings (``RESGUARDO_*``), on top of what every service shares."""

from __future__ import annotations

from dataclasses import dataclass

from shared.config import CommonConfig, ConfigError, env_name, setting

THREE_DAYS_S = 3 * 24 * 3600.0


@dataclass(frozen=True)
class NotifierConfig(CommonConfig):
    webhook_allow_private: bool = setting(
        False,
        "Let webhooks reach loopback, private and link-local addresses, over http too "
        "(development and tests only; cloud metadata addresses stay refused).",
    )
    webhook_timeout_s: float = setting(
        10.0, "Seconds a receiver has to answer one delivery before it counts as failed."
    )
    webhook_concurrency: int = setting(64, "Deliveries in flight at once, for all endpoints.")
    webhook_endpoint_concurrency: int = setting(
        4,
        "Deliveries in flight at once to one endpoint, per notifier process: a slow receiver holds "
        "at most this many of its slots, never every tenant's.",
    )
    webhook_retry_base_s: float = setting(
        5.0, "First retry delay; each further retry doubles it (with jitter), up to the cap."
    )
    webhook_retry_max_s: float = setting(6 * 3600.0, "Longest delay between two retries.")
    webhook_give_up_after_s: float = setting(
        THREE_DAYS_S,
        "How long a delivery is retried, from the event, before it is given up (3 days).",
    )
    webhook_ack_wait_s: float = setting(
        30.0,
        "Seconds without a heartbeat after which JetStream hands a delivery to another notifier "
        "(a killed one's deliveries are sent again after this).",
    )
    webhook_secret_ttl_s: float = setting(
        60.0,
        "How long the notifier keeps an endpoint's signing secrets once the vault handed them "
        "over (one sending job); then they are dropped and asked for again.",
    )

    def validate(self) -> None:
        super().validate()
        for name in (
            "webhook_timeout_s",
            "webhook_retry_base_s",
            "webhook_retry_max_s",
            "webhook_give_up_after_s",
            "webhook_ack_wait_s",
            "webhook_secret_ttl_s",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{env_name(name)} must be a positive number.")
        if self.webhook_retry_max_s < self.webhook_retry_base_s:
            raise ConfigError(
                f"{env_name('webhook_retry_max_s')} must be at least "
                f"{env_name('webhook_retry_base_s')}."
            )
        for name in ("webhook_concurrency", "webhook_endpoint_concurrency"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{env_name(name)} must be at least 1.")
