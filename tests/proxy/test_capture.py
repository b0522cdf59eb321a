"""Real aiortc publishers against the proxy as a real process, events on a real nats-server."""

from __future__ import annotations

from nats.js import JetStreamContext

from resguardo.publisher import Publisher, publish
from shared.events import captures

from .conftest import (
    Proxy,
    history,
    recording_key,
    start_recording,
    stop_recording,
    wait_for_count,
    wait_for_event,
)
from .media_check import (
    assert_files_match,
    check_sender_reports,
    decode_segments,
    segments_of,
)


def within(got: int, sent: int, tolerance: float = 0.10) -> bool:
    return abs(got - sent) <= tolerance * sent


def of_type(events: list, cls: type) -> list:
    return [e for e in events if isinstance(e, cls)]


async def capture_and_check(js: JetStreamContext, proxy: Proxy, codec: str) -> None:
    rec = await start_recording(js)
    result = await publish(
        proxy.whip_url(rec.rid),
        rec.token,
        participant="Ana María",
        seconds=4,
        ca_file=proxy.ca_file,
        video_codec=codec,
    )
    assert result.connected and result.deleted
    assert result.video_frames > 60 and result.audio_frames > 100
    await stop_recording(js, rec)
    closed = await wait_for_event(js, f"captures.{rec.rid}.closed")
    events = await history(js, rec.rid)

    joined = of_type(events, captures.ParticipantJoined)
    assert len(joined) == 1 and joined[0].participant_id == "Ana-Maria"
    assert joined[0].display_name == "Ana María"
    started = {e.kind: e for e in of_type(events, captures.TrackStarted)}
    assert set(started) == {"audio", "video"}
    assert started["video"].codec == f"video/{codec}"
    assert started["audio"].codec == "audio/opus" and started["audio"].clock_rate == 48000
    for e in started.values():
        assert e.track_id == f"Ana-Maria-{joined[0].session_id}-{e.kind}"
        assert e.first_frame_wallclock_ns >= joined[0].joined_at_ns
    ended = {e.track_id: e for e in of_type(events, captures.TrackEnded)}
    assert set(ended) == {e.track_id for e in started.values()}
    left = of_type(events, captures.ParticipantLeft)
    assert len(left) == 1 and "DELETE" in left[0].reason

    segments = of_type(events, captures.SegmentWritten)
    assert isinstance(closed, captures.CaptureClosed)
    assert closed.segments == len(segments) and closed.tracks == 2
    for track_id, end in ended.items():
        mine = [s for s in segments if s.track_id == track_id]
        assert end.segments == len(mine) and end.frames == sum(s.frames for s in mine)
        assert sorted(s.seq for s in mine) == list(range(len(mine)))
    # 4 s of media in 1 s segments: several per track, video rotated on requested keyframes
    assert len(segments_of(events, "video")) >= 3 and len(segments_of(events, "audio")) >= 3
    assert ended[started["video"].track_id].keyframe_requests >= 2

    rec_dir = proxy.rec_dir(rec)
    key = await recording_key(js, rec)
    assert assert_files_match(rec_dir, events, key) == len(segments)
    assert not list(rec_dir.rglob("*.part"))
    # nothing outside the recording's own folder
    assert all(p.is_relative_to(rec_dir) for p in proxy.backup_root.rglob("*") if p.is_file())

    video = decode_segments(rec_dir, segments_of(events, "video"), codec.lower(), key)
    assert video.errors == 0 and video.keyframe_first
    assert within(video.frames_out, result.video_frames), (video, result)
    audio = decode_segments(rec_dir, segments_of(events, "audio"), "opus", key)
    assert audio.errors == 0
    assert within(audio.frames_out, result.audio_frames), (audio, result)
    # RTCP sender reports (about one a second per track) are carried for A/V alignment
    reports = check_sender_reports(events)
    assert reports["audio"] >= 2 and reports["video"] >= 2, reports
    health = await proxy.health()
    assert health["sessions"] == 0 and health["peer_connections"] == 0


async def test_vp8_opus_capture(js: JetStreamContext, proxy: Proxy) -> None:
    await capture_and_check(js, proxy, "VP8")


async def test_h264_opus_capture(js: JetStreamContext, proxy: Proxy) -> None:
    await capture_and_check(js, proxy, "H264")


async def test_stop_ends_live_sessions_and_refuses_new_ones(
    js: JetStreamContext, proxy: Proxy
) -> None:
    rec = await start_recording(js)
    url = proxy.whip_url(rec.rid)
    async with (
        Publisher(url, rec.token, participant="ana", ca_file=proxy.ca_file) as a,
        Publisher(url, rec.token, participant="bo", ca_file=proxy.ca_file) as b,
    ):
        assert (await proxy.health())["sessions"] == 2
        # the same participant twice at once is refused
        dup = Publisher(url, rec.token, participant="ana", ca_file=proxy.ca_file)
        try:
            await dup.start()
            raise AssertionError("a second session for the same participant was accepted")
        except Exception as exc:
            assert "409" in str(exc)
        finally:
            await dup.stop(delete=False)
        await wait_for_count(js, rec.rid, captures.SegmentWritten, 2)
        await stop_recording(js, rec)
        closed = await wait_for_event(js, f"captures.{rec.rid}.closed")
        assert a.location != b.location
    events = await history(js, rec.rid)
    left = of_type(events, captures.ParticipantLeft)
    assert sorted(e.participant_id for e in left) == ["ana", "bo"]
    assert all(e.reason == "recording stopped" for e in left)
    assert isinstance(closed, captures.CaptureClosed) and closed.tracks == 4
    assert closed.segments == len(of_type(events, captures.SegmentWritten))
    # closed is the last capture fact: nothing of this recording came after it
    assert isinstance(events[-1], captures.CaptureClosed)
    key = await recording_key(js, rec)
    assert assert_files_match(proxy.rec_dir(rec), events, key) == closed.segments
    late = Publisher(url, rec.token, participant="cy", ca_file=proxy.ca_file)
    try:
        await late.start()
        raise AssertionError("a session was accepted after stop")
    except Exception as exc:
        assert "410" in str(exc)
    finally:
        await late.stop(delete=False)
    health = await proxy.health()
    assert health["sessions"] == 0 and health["peer_connections"] == 0
