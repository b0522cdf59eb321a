"""Audio on the sample timeline: a decoded frame that is exactly a window goes to the encoder as
it is; anything else is assembled from the pieces, with silence where nothing was captured."""

from __future__ import annotations

import array

import av

from services.transcoder.media import CONTINUITY_SAMPLES, RATE, AlignedPcm

N = 960  # one 20 ms packet


def _frame(value: float, samples: int = N) -> av.AudioFrame:
    frame = av.AudioFrame(format="fltp", layout="stereo", samples=samples)
    plane = array.array("f", [value] * samples).tobytes()
    frame.planes[0].update(plane)
    frame.planes[1].update(plane)
    frame.sample_rate = RATE
    return frame


def _values(pcm: tuple[bytes, bytes]) -> list[float]:
    left = array.array("f", pcm[0])
    assert left == array.array("f", pcm[1])
    return sorted(set(left.tolist()))


def test_an_exact_window_is_the_decoded_frame_itself() -> None:
    first, second = _frame(0.25), _frame(0.5)
    pcm = AlignedPcm(iter([(0, first), (N, second)]))
    got = pcm.read_frame(0, N)
    assert got is first and got.pts == 0 and got.time_base == first.time_base
    assert pcm.read_frame(N, N) is second and second.pts == N


def test_gaps_are_silence_and_overlaps_are_cut() -> None:
    gap = N + CONTINUITY_SAMPLES + 480  # too far from the first frame's end to play on
    long = 5 * N
    third = _frame(0.75, long)  # starts 480 samples into the second: all but 480 overlap
    pcm = AlignedPcm(iter([(0, _frame(0.25)), (gap, _frame(0.5, long)), (gap + 480, third)]))
    assert _values(pcm.read(0, N)) == [0.25]
    assert _values(pcm.read(N, gap - N)) == [0.0]
    assert _values(pcm.read(gap, long)) == [0.5]
    kept = pcm.read_frame(gap + long, 480)
    assert kept is not third and kept.samples == 480 and kept.pts == gap + long
    assert _values((bytes(kept.planes[0])[: 480 * 4], bytes(kept.planes[1])[: 480 * 4])) == [0.75]
