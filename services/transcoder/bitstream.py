"""What the transcoder reads from the codecs' own bytes: VP8 key frames and picture size
(RFC 6386), Opus packet durations (RFC 6716). Pure functions."""

from __future__ import annotations

from shared.capture_format import Frame


def vp8_is_keyframe(data: bytes) -> bool:
    """RFC 6386 9.1: bit 0 of the frame tag is 0 for a key frame."""
    return bool(data) and not data[0] & 1


def vp8_dimensions(data: bytes) -> tuple[int, int] | None:
    """Width and height from a VP8 key frame header (RFC 6386 9.1), or None if not a key frame.

    Bytes 3..5 are the start code 9d 01 2a; then 16-bit little-endian width and height, whose
    top two bits are the scaling mode.
    """
    if len(data) < 10 or not vp8_is_keyframe(data) or data[3:6] != b"\x9d\x01\x2a":
        return None
    width = int.from_bytes(data[6:8], "little") & 0x3FFF
    height = int.from_bytes(data[8:10], "little") & 0x3FFF
    return (width, height) if width and height else None


_SILK_MS = (10.0, 20.0, 40.0, 60.0)
_HYBRID_MS = (10.0, 20.0)
_CELT_MS = (2.5, 5.0, 10.0, 20.0)


def opus_duration_ms(data: bytes) -> float | None:
    """An Opus packet's duration from its TOC byte (RFC 6716 3.1), or None if malformed."""
    if not data:
        return None
    config = data[0] >> 3
    if config < 12:
        frame = _SILK_MS[config % 4]
    elif config < 16:
        frame = _HYBRID_MS[config % 2]
    else:
        frame = _CELT_MS[config % 4]
    code = data[0] & 3
    if code == 0:
        count = 1
    elif code in (1, 2):
        count = 2
    else:
        if len(data) < 2:
            return None
        count = data[1] & 0x3F
        if count == 0:
            return None
    return frame * count


def is_keyframe(codec: str, frame: Frame) -> bool:
    if codec == "video/vp8":
        return vp8_is_keyframe(frame.data)
    return frame.keyframe
