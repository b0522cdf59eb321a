"""Sender clocks: where a track's RTP timestamps sit on its sender's own wall clock, from the RTCP
sender reports the proxy kept (RFC 3550 6.4.1: each report pairs an NTP time with the RTP time
of the same instant). Pure functions.

Why: one sender stamps its microphone and its camera against the same wall clock, so two tracks
placed by their reports line up as they were captured, whatever delayed either on the way to the
proxy (jitter, a busy event loop, ICE finishing later for one track). Arrival times cannot do
that: any delay of a track's first seconds becomes a permanent offset.

- **Rate.** A camera clock that runs fast (say 100 ppm: 60 ms in 10 minutes) shows in the reports
  as RTP time advancing faster than NTP time. The rate is fitted through the least delayed report
  of each stretch of the call (a report is sent after its frame: delay is never negative, so the
  lower envelope is the clock), and only once the reports span ``MIN_SPAN_S``: over less, drift
  is below a millisecond and a fitted rate would be noise.
- **Origin.** The NTP time of RTP 0 is the lower envelope too: the report with the least delay
  between capture and sending (an encoder's time, a send queue) wins.
- **Not believed:** a rate further than ``MAX_DRIFT_PPM`` from nominal, or reports whose NTP
  time does not advance with RTP time; the track then keeps the nominal rate.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .state import Segment, Track

ANCHOR_WINDOW_NS = 10_000_000_000  # segments whose frames refine a track's arrival anchor
MIN_SPAN_S = 20.0  # reports spanning less than this: the nominal rate (drift < 1 ms)
MAX_DRIFT_PPM = 2500.0  # further from nominal than this: a bad report, not a clock
WINDOWS = 16  # stretches of the call whose least delayed reports define the rate
# Reports that put a track this far from where its frames arrived are not believed: a sender
# whose tracks' reports use different clocks would otherwise shift one by hours.
MAX_DISAGREEMENT_NS = 2_000_000_000


@dataclass(frozen=True)
class SenderClock:
    """A track's RTP clock on its sender's wall clock: ``at(rtp)`` is Unix ns by the sender."""

    clock_rate: int
    ns_per_tick: float
    origin_ns: float  # sender time of RTP time 0 on the capture's timeline
    rate_fitted: bool  # False: the nominal rate (too short a span, or a rate not believed)

    def at(self, rtp_ts: int) -> float:
        return self.origin_ns + rtp_ts * self.ns_per_tick

    @property
    def drift_ppm(self) -> float:
        """How much faster than nominal the sender's RTP clock runs (positive: fast)."""
        return (1e9 / self.clock_rate / self.ns_per_tick - 1.0) * 1e6


def fit_sender_clock(reports: Iterable[tuple[int, int]], clock_rate: int) -> SenderClock | None:
    """The sender clock of one track from its ``(rtp_ts, ntp_unix_ns)`` reports, or None if it
    sent none."""
    pairs = sorted(set(reports))
    if not pairs or clock_rate <= 0:
        return None
    nominal = 1e9 / clock_rate
    rate, fitted = nominal, False
    span = pairs[-1][0] - pairs[0][0]
    if len(pairs) >= 4 and span >= MIN_SPAN_S * clock_rate:
        candidate = _envelope_rate(pairs, nominal)
        if candidate is not None and abs(nominal / candidate - 1.0) * 1e6 <= MAX_DRIFT_PPM:
            rate, fitted = candidate, True
    origin = min(ntp - rtp * rate for rtp, ntp in pairs)
    return SenderClock(clock_rate, rate, origin, fitted)


def _envelope_rate(pairs: list[tuple[int, int]], nominal: float) -> float | None:
    """Least squares through the least delayed report of each of ``WINDOWS`` equal stretches
    of RTP time. Residuals are taken against the nominal rate first, so the numbers stay small
    (float precision) and "least delayed" is judged on the same line for every window."""
    first, last = pairs[0][0], pairs[-1][0]
    width = (last - first) / WINDOWS or 1
    best: dict[int, tuple[float, float]] = {}
    for rtp, ntp in pairs:
        window = min(int((rtp - first) / width), WINDOWS - 1)
        x = float(rtp - first)
        residual = ntp - pairs[0][1] - x * nominal
        if window not in best or residual < best[window][1]:
            best[window] = (x, residual)
    if len(best) < 2:
        return None
    xs = [x for x, _ in best.values()]
    ys = [y for _, y in best.values()]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx <= 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    rate = nominal + slope
    return rate if rate > 0 else None


@dataclass(frozen=True)
class Anchor:
    """Where a track's first RTP timestamp lands on the proxy's wall clock, and at what rate its
    RTP time advances there."""

    wall_ns: int
    ns_per_tick: float  # 0.0: the nominal clock rate (placed by arrival)
    source: str  # "sender_report" or "arrival"
    drift_ppm: float = 0.0


def align_session(
    first_rtp: dict[str, int],
    arrival_ns: dict[str, int],
    clocks: dict[str, SenderClock | None],
) -> dict[str, Anchor]:
    """Anchors for the tracks of one sending session (one peer connection: one sender clock).

    Tracks with sender reports are placed on the sender's clock, which is mapped to the proxy's
    by the least delayed of them (the smallest arrival-minus-sender time); tracks without keep
    their arrival anchor, and so do all of them if the reports put a track more than
    ``MAX_DISAGREEMENT_NS`` from its arrival.
    """
    timed = {t: c for t, c in clocks.items() if c is not None}
    offset = min((arrival_ns[t] - c.at(first_rtp[t]) for t, c in timed.items()), default=0.0)
    if any(
        abs(c.at(first_rtp[t]) + offset - arrival_ns[t]) > MAX_DISAGREEMENT_NS
        for t, c in timed.items()
    ):
        timed = {}
    anchors: dict[str, Anchor] = {}
    for track_id, arrival in arrival_ns.items():
        clock = timed.get(track_id)
        if clock is None:
            anchors[track_id] = Anchor(arrival, 0.0, "arrival")
        else:
            wall = round(clock.at(first_rtp[track_id]) + offset)
            anchors[track_id] = Anchor(
                wall, clock.ns_per_tick, "sender_report", round(clock.drift_ppm, 1)
            )
    return anchors


# -- a participant's tracks -------------------------------------------------------------------


def arrival_anchor_ns(track: Track, segments: Iterable[Segment]) -> int:
    """The wall clock (ns) of the track's first RTP timestamp: the earliest that any frame of its
    first seconds implies. Arrival delay is never negative, so the least delayed frame wins."""
    first_rtp = min((s.first_rtp_ts for s in segments), default=0)
    best = track.first_frame_wallclock_ns
    limit = track.first_frame_wallclock_ns + ANCHOR_WINDOW_NS
    for seg in segments:
        for wall, rtp in (
            (seg.first_wallclock_ns, seg.first_rtp_ts),
            (seg.last_wallclock_ns, seg.last_rtp_ts),
        ):
            if wall <= 0 or wall > limit or rtp < first_rtp:
                continue
            implied = wall - (rtp - first_rtp) * 1_000_000_000 // track.clock_rate
            # Never earlier than a frame could have been: bounded by a plausible jitter.
            if track.first_frame_wallclock_ns - implied < ANCHOR_WINDOW_NS // 20:
                best = min(best, implied)
    return best


def track_anchors(members: Sequence[tuple[Track, Sequence[Segment]]]) -> dict[str, Anchor]:
    """Every track's anchor, by the sender's clock per sending session where it sent reports."""
    sessions: dict[str, list[tuple[Track, Sequence[Segment]]]] = {}
    for track, segs in members:
        sessions.setdefault(track.session_id, []).append((track, segs))
    anchors: dict[str, Anchor] = {}
    for group in sessions.values():
        anchors.update(
            align_session(
                {t.track_id: min(s.first_rtp_ts for s in segs) for t, segs in group},
                {t.track_id: arrival_anchor_ns(t, segs) for t, segs in group},
                {
                    t.track_id: fit_sender_clock(
                        (r for s in segs for r in s.sender_reports), t.clock_rate
                    )
                    for t, segs in group
                },
            )
        )
    return anchors
