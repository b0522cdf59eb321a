"""Pure media decisions: keyframes, codec choice, offer checks, segment rotation.

No I/O here: every function takes plain values and returns plain values, so each rule can be
tested on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import WhipRefused

# What the proxy records: codecs the transcoder can remux without re-encoding.
RECORDABLE = {"audio": ("opus",), "video": ("vp8", "h264")}
MAX_SDP_BYTES = 64 * 1024


VP8_START_CODE = b"\x9d\x01\x2a"
ANNEX_B_START = (b"\x00\x00\x00\x01", b"\x00\x00\x01")


def is_vp8_keyframe(data: bytes) -> bool:
    """RFC 6386 9.1: bit 0 of the frame tag is 0 for a key frame, whose 3-byte tag is followed
    by the start code 9d 01 2a and the picture size. (The start code also tells a whole key frame
    from the tail of one whose first packets were lost.)"""
    return len(data) >= 10 and not data[0] & 1 and data[3:6] == VP8_START_CODE


def h264_nal_types(data: bytes) -> list[int]:
    """NAL unit types in an Annex-B byte stream (start codes 00 00 01 or 00 00 00 01)."""
    types: list[int] = []
    i = data.find(b"\x00\x00\x01")
    while i != -1 and i + 3 < len(data):
        types.append(data[i + 3] & 0x1F)
        i = data.find(b"\x00\x00\x01", i + 3)
    return types


def is_h264_keyframe(data: bytes) -> bool:
    """An IDR slice (5) or an SPS (7) that starts a decodable sequence. The frame must begin
    with a start code: one that does not is the tail of a frame whose first packets were lost."""
    return data.startswith(ANNEX_B_START) and any(t in (5, 7) for t in h264_nal_types(data))


def is_keyframe(codec_name: str, data: bytes) -> bool:
    name = codec_name.lower()
    if name == "vp8":
        return is_vp8_keyframe(data)
    if name == "h264":
        return is_h264_keyframe(data)
    return True  # audio: every Opus frame decodes on its own


@dataclass(frozen=True)
class CodecRef:
    """The parts of an RTP codec the filter needs (kept apart from aiortc's classes)."""

    mime_type: str
    payload_type: int
    apt: int | None = None  # for RTX: the payload type it repairs

    @property
    def name(self) -> str:
        return self.mime_type.split("/", 1)[-1].lower()


def recordable_payload_types(kind: str, codecs: Sequence[CodecRef]) -> list[int]:
    """The negotiated payload types the proxy keeps, in the offer's order: recordable codecs,
    plus the RTX that repairs one of them. Empty means nothing in the offer can be recorded."""
    allowed = RECORDABLE.get(kind, ())
    keep = [c.payload_type for c in codecs if c.name in allowed]
    rtx = [c.payload_type for c in codecs if c.name == "rtx" and c.apt in keep]
    return [c.payload_type for c in codecs if c.payload_type in keep or c.payload_type in rtx]


@dataclass(frozen=True)
class OfferMedia:
    kind: str
    direction: str
    codec_names: tuple[str, ...]


def check_offer(media: Sequence[OfferMedia]) -> None:
    """Refuse offers the proxy cannot record, with the reason (raises WhipRefused 400)."""
    sending = [m for m in media if m.kind in ("audio", "video")]
    if not sending:
        raise WhipRefused(400, "The offer has no audio or video section; send audio and/or video.")
    kinds = [m.kind for m in sending]
    for kind in ("audio", "video"):
        if kinds.count(kind) > 1:
            raise WhipRefused(
                400, f"The offer has more than one {kind} section; send at most one {kind} track."
            )
    for m in sending:
        if m.direction not in ("sendonly", "sendrecv"):
            raise WhipRefused(
                400, f"The offer's {m.kind} section does not send media; use sendonly for WHIP."
            )
        names = {n.lower() for n in m.codec_names}
        if not names & set(RECORDABLE[m.kind]):
            wanted = " or ".join(c.upper() if c != "opus" else "Opus" for c in RECORDABLE[m.kind])
            raise WhipRefused(
                400, f"The offer's {m.kind} codecs cannot be recorded; offer {wanted}."
            )


def segment_elapsed(first_ts: int, ts: int, clock_rate: int, segment_seconds: float) -> bool:
    """Has the open segment (starting at RTP time ``first_ts``) reached its length at ``ts``?"""
    return (ts - first_ts) >= segment_seconds * clock_rate


def rotate_now(kind: str, keyframe: bool, elapsed: bool) -> bool:
    """Start a new segment with this frame? Audio at the period; video at the next keyframe."""
    return elapsed and (kind == "audio" or keyframe)


# -- RTCP sender reports (A/V alignment) ----------------------------------------------------

NTP_UNIX_OFFSET_S = 2_208_988_800  # seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)
RTP_TS_MOD = 1 << 32


def ntp_to_unix_ns(ntp: int) -> int:
    """A 64-bit NTP timestamp (RFC 3550 4: seconds since 1900 . 32-bit fraction) as Unix ns."""
    seconds, fraction = ntp >> 32, ntp & 0xFFFFFFFF
    return (seconds - NTP_UNIX_OFFSET_S) * 1_000_000_000 + ((fraction * 1_000_000_000) >> 32)


def unwrap_rtp_ts(raw: int, origin: int, near: int) -> int:
    """A 32-bit RTP timestamp on an unwrapped timeline where ``t = raw - origin`` (+ k * 2^32):
    the value nearest ``near`` (the latest timestamp seen on that timeline)."""
    t = raw - origin
    k = (near - t + RTP_TS_MOD // 2) // RTP_TS_MOD
    return t + k * RTP_TS_MOD
