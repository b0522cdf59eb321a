"""Sample instances of every event, built from the Structs' own type info (no hand-kept list)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import msgspec.inspect as mi

FIXED_TIME = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


def sample_value(t: mi.Type, name: str = "") -> Any:
    if isinstance(t, mi.StrType):
        if name == "recording_id":
            return "rec_0123456789abcdef01234567"
        if name == "tenant_id":
            return "ten_0123456789abcdef"
        if name.endswith("sha256"):
            return "ab" * 32
        return f"sample-{name}" if name else "sample"
    if isinstance(t, mi.BoolType):
        return False
    if isinstance(t, mi.IntType):
        return 1
    if isinstance(t, mi.FloatType):
        return 1.5
    if isinstance(t, mi.DateTimeType):
        return FIXED_TIME
    if isinstance(t, mi.LiteralType):
        return t.values[0]
    if isinstance(t, mi.ListType):
        return [sample_value(t.item_type, name)]
    if isinstance(t, mi.DictType):
        return {}
    if isinstance(t, mi.StructType):
        return build(t.cls)
    if isinstance(t, mi.UnionType):
        return sample_value(t.types[0], name)
    if isinstance(t, mi.BytesType):
        return b"sample"
    raise TypeError(f"no sample for {t!r} ({name})")


def build(cls: type[msgspec.Struct]) -> Any:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    kwargs = {f.name: sample_value(f.type, f.name) for f in info.fields if f.required}
    return cls(**kwargs)
