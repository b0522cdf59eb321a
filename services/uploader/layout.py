"""Where files go at the destination: ``prefix`` + key template, and nothing can escape it.

The template may use only ``{tenant}``, ``{date}``, ``{recording_id}`` and ``{file}`` (no format
specs, conversions, attributes or indexes: ``str.format`` on user input would otherwise reach
object attributes). Every path segment of the result is checked: no empty, ``.`` or ``..``
segment, no backslash, no control character, no leading ``/``.
"""

from __future__ import annotations

import re
import string
import unicodedata
from datetime import UTC, datetime

from shared.ids import TENANT_ID_RE, is_recording_id
from shared.providers import DEFAULT_KEY_TEMPLATE

from .errors import PermanentUploadError

FIELDS = ("tenant", "date", "recording_id", "file")
REQUIRED = ("recording_id", "file")  # else two recordings or two files would share a key
FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
MAX_KEY = 1024


class UnsafeKey(PermanentUploadError):
    pass


def check_file_name(name: str) -> str:
    if not FILE_NAME_RE.match(name) or ".." in name:
        raise UnsafeKey(
            f"sealed file name {name!r} is not a plain file name; the recording was not sent"
        )
    return name


def unsafe_segment(segment: str) -> bool:
    """Empty, ``.``, ``..``, a separator, a control character, or something a server could
    normalise into one of those (NFKC: fullwidth full stops and solidus U+FF0E / U+FF0F,
    one- and two-dot leaders U+2024 / U+2025...)."""
    folded = unicodedata.normalize("NFKC", segment)
    return (
        segment in ("", ".", "..")
        or folded in (".", "..")
        or any(c in folded for c in "/\\")
        or not segment.isprintable()
        or not folded.isprintable()
    )


def _check_segments(path: str, what: str) -> None:
    for segment in path.split("/"):
        if unsafe_segment(segment):
            raise UnsafeKey(
                f"the destination's {what} gives an unsafe path ({segment!r} segment); "
                "fix the destination's prefix or key_template"
            )


def render_key(
    template: str | None,
    *,
    prefix: str | None,
    tenant_id: str,
    started_at: datetime,
    recording_id: str,
    file_name: str,
) -> str:
    template = template or DEFAULT_KEY_TEMPLATE
    if not TENANT_ID_RE.match(tenant_id) or not is_recording_id(recording_id):
        raise UnsafeKey("the recording's tenant or id is not valid; the recording was not sent")
    values = {
        "tenant": tenant_id,
        "date": started_at.astimezone(UTC).date().isoformat(),
        "recording_id": recording_id,
        "file": check_file_name(file_name),
    }
    out: list[str] = []
    seen: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        raise UnsafeKey(
            "the destination's key_template has an unbalanced brace; fix the destination"
        ) from None
    for literal, field, spec, conversion in parsed:
        out.append(literal)
        if field is None:
            continue
        if field not in values or spec or conversion:
            raise UnsafeKey(
                f"the destination's key_template may use only "
                f"{', '.join('{' + f + '}' for f in FIELDS)}; fix the destination"
            )
        seen.add(field)
        out.append(values[field])
    missing = [f for f in REQUIRED if f not in seen]
    if missing:
        raise UnsafeKey(
            f"the destination's key_template must contain {{{missing[0]}}}; fix the destination"
        )
    key = "".join(out)
    if key.startswith("/"):
        raise UnsafeKey("the destination's key_template must not start with '/'")
    _check_segments(key, "key_template")
    clean_prefix = (prefix or "").strip("/")
    if clean_prefix:
        _check_segments(clean_prefix, "prefix")
        key = f"{clean_prefix}/{key}"
    if len(key.encode()) > MAX_KEY:
        raise UnsafeKey("the remote key would exceed 1024 bytes; shorten the prefix or template")
    return key
