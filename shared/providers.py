"""Destination providers: which config fields each takes, and which of them are secret.

The vault validates every destination against these declarations (unknown or missing fields are
an error naming the field); only the secret fields are encrypted, the rest stay readable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

FieldType = Literal["str", "int", "bool", "list"]  # list: a list of strings
MAX_AGE_RECIPIENTS = 20


@dataclass(frozen=True)
class FieldSpec:
    name: str
    secret: bool = False
    required: bool = False
    type: FieldType = "str"
    choices: tuple[str, ...] = ()
    doc: str = ""
    # Further checks of a value of the right type: raises FieldError naming the field.
    check: Callable[[str, Any], None] | None = None


def check_age_recipients(field: str, value: list[str]) -> None:
    """``encrypt_to``: 1 to 20 distinct age X25519 recipients (``age1...``), each checked by the
    age library itself (bech32 and key length), so a typo is refused now, not at the first
    upload. Recipients are public keys: naming the bad one's position is enough."""
    from pyrage import RecipientError, x25519  # only when the field is used

    if not value:
        raise FieldError(field, f"{field} must list at least one age recipient (age1...)")
    if len(value) > MAX_AGE_RECIPIENTS:
        raise FieldError(field, f"{field} may list at most {MAX_AGE_RECIPIENTS} age recipients")
    for i, item in enumerate(value):
        where = f"{field}[{i}]"
        if not item.lower().startswith("age1"):
            raise FieldError(
                field, f"{where} is not an age X25519 recipient: it must start with age1"
            )
        try:
            x25519.Recipient.from_str(item)
        except RecipientError:
            raise FieldError(
                field, f"{where} is not a valid age X25519 recipient (age1..., 62 characters)"
            ) from None
    if len({v.lower() for v in value}) != len(value):
        raise FieldError(field, f"{field} lists the same recipient twice")


# Fields every provider accepts (issue: verify / persist / key template are per destination).
COMMON_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("prefix", doc="Key/path prefix under which recordings are written."),
    FieldSpec(
        "verify",
        choices=("checksum", "readback"),
        doc="checksum: the provider validates and reports a checksum that is checked (default; "
        "on FTP the server's HASH command, else readback); readback: download and re-hash.",
    ),
    FieldSpec(
        "persist_backup",
        type="bool",
        doc="Keep the backup in our store after a confirmed upload (default false).",
    ),
    FieldSpec(
        "output_format",
        choices=("webm", "mp4"),
        doc="Per-participant file format: webm (VP8/Opus, no re-encoding; default) or mp4 "
        "(H.264/AAC).",
    ),
    FieldSpec(
        "output_tracks",
        choices=("av", "audio", "video"),
        doc="Which tracks the per-participant files hold: av (default), audio or video.",
    ),
    FieldSpec(
        "key_template", doc="Remote layout; default '{tenant}/{date}/{recording_id}/{file}'."
    ),
    FieldSpec(
        "encrypt_to",
        type="list",
        check=check_age_recipients,
        doc="A list of age recipients (age1... X25519 public keys): every file is then sent "
        "as <name>.age that only their identities decrypt (see docs/encrypt-to.md).",
    ),
)

PROVIDERS: dict[str, tuple[FieldSpec, ...]] = {
    "s3": (
        FieldSpec("bucket", required=True, doc="Bucket name."),
        FieldSpec("region", doc="AWS region (default us-east-1)."),
        FieldSpec("endpoint_url", doc="S3-compatible endpoint, e.g. http://127.0.0.1:9000."),
        FieldSpec("path_style", type="bool", doc="Use path-style addressing."),
        FieldSpec("access_key_id", secret=True, required=True, doc="Access key id."),
        FieldSpec("secret_access_key", secret=True, required=True, doc="Secret access key."),
        FieldSpec("session_token", secret=True, doc="Session token for temporary credentials."),
        FieldSpec(
            "checksum",
            choices=("crc32", "md5"),
            doc="crc32: per-part CRC-32 flexible checksums (default); md5: for S3-compatible "
            "stores that reject them, Content-MD5 on every put/part, confirmed by the ETag.",
        ),
    ),
    "gcs": (
        FieldSpec("bucket", required=True, doc="Bucket name."),
        FieldSpec(
            "service_account_json",
            secret=True,
            doc="The service account's JSON key (its whole text). Required unless `endpoint` "
            "points at an emulator that needs no credentials.",
        ),
        FieldSpec(
            "endpoint",
            doc="API root for emulators, e.g. http://127.0.0.1:9023 (default: Google's).",
        ),
    ),
    "azure": (
        FieldSpec("container", required=True, doc="Blob container name."),
        FieldSpec(
            "connection_string",
            secret=True,
            doc="Storage account connection string (alternative to account_url + a key or SAS).",
        ),
        FieldSpec("account_url", doc="Blob endpoint, e.g. https://ACCOUNT.blob.core.windows.net."),
        FieldSpec("account_key", secret=True, doc="Storage account key (with account_url)."),
        FieldSpec("sas_token", secret=True, doc="SAS token (with account_url)."),
    ),
    "ftp": (
        FieldSpec("host", required=True, doc="FTP server host name or address."),
        FieldSpec("port", type="int", doc="Port (default 21, or 990 for implicit TLS)."),
        FieldSpec("username", doc="User name (default anonymous)."),
        FieldSpec("password", secret=True, doc="Password."),
        FieldSpec("directory", doc="Remote folder everything is written under (default: login's)."),
        FieldSpec(
            "tls",
            choices=("none", "explicit", "implicit"),
            doc="none: plain FTP; explicit: AUTH TLS upgrade (FTPS, default); "
            "implicit: TLS from the first byte.",
        ),
    ),
    "file": (
        FieldSpec(
            "path", required=True, doc="Local folder (development only): files are copied under it."
        ),
    ),
}

DEFAULT_KEY_TEMPLATE = "{tenant}/{date}/{recording_id}/{file}"


class FieldError(ValueError):
    """A destination config field is wrong; ``field`` names it for the API's 422."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def fields_of(provider: str) -> tuple[FieldSpec, ...]:
    if provider not in PROVIDERS:
        raise FieldError(
            "provider", f"provider must be one of {', '.join(sorted(PROVIDERS))}, not {provider!r}"
        )
    return PROVIDERS[provider] + COMMON_FIELDS


def split_config(provider: str, config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate ``config`` and split it into (public, secret) parts."""
    specs = {f.name: f for f in fields_of(provider)}
    for key in config:
        if key not in specs:
            raise FieldError(f"config.{key}", f"unknown field config.{key} for provider {provider}")
    public: dict[str, Any] = {}
    secret: dict[str, Any] = {}
    for spec in specs.values():
        if spec.name not in config or config[spec.name] in (None, ""):
            if spec.required:
                raise FieldError(
                    f"config.{spec.name}", f"config.{spec.name} is required for provider {provider}"
                )
            continue
        value = config[spec.name]
        expected: type = {"str": str, "int": int, "bool": bool, "list": list}[spec.type]
        if not isinstance(value, expected) or (spec.type == "int" and isinstance(value, bool)):
            raise FieldError(f"config.{spec.name}", f"config.{spec.name} must be a {spec.type}")
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise FieldError(f"config.{spec.name}", f"config.{spec.name} must be a list of strings")
        if spec.check is not None:
            spec.check(f"config.{spec.name}", value)
        if spec.choices and value not in spec.choices:
            raise FieldError(
                f"config.{spec.name}",
                f"config.{spec.name} must be one of {', '.join(spec.choices)}",
            )
        (secret if spec.secret else public)[spec.name] = value
    return public, secret
