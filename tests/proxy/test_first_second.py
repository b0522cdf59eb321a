"""16 publishers joining one recording in the same instant, on a loaded machine: from each
publisher's first key frame on, every frame it put on the wire before it left is in the files.

Real processes throughout: nats-server, vault, the proxy, and the publishers in a process of
their own (``tests/proxy/join.py``: all 16 ``start()``s in one gather, pre-encoded VP8/Opus),
with busy loops competing for the 2 cores so the proxy falls behind the media, as it does on a
loaded machine. What a publisher sent is counted on its own DTLS transport (frames put on the
wire), and must equal, per track, what aiortc's sender handed out (``PacketTrack.frames``) and
what its ``outbound-rtp`` stats count in packets; what the proxy wrote is read back from the
encrypted segment files.

Before the fix the proxy, behind the media by seconds, closed each session on its DELETE with
the end of it still unread in its socket buffers: that was lost (3 runs, all 32 tracks each: 25-
118 video and 40-207 audio frames per track, 0.8-4 s); the start, from the first key frame,
was always complete (the first video frame written was the publisher's first, loop frame 0).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.js import JetStreamContext

from resguardo.packet_media import encode_media, load_media
from shared.embedded import NatsServer
from shared.events import captures

from .conftest import (
    make_proxy,
    recording_key,
)
from .join import count_written, joined_call, shortfalls

PUBLISHERS = 16
SECONDS = 4.0  # of media per publisher
LOAD = 6  # busy processes on the machine while the publishers join and send


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "media.msgpack"
    encode_media(path)
    return path


async def test_publishers_joining_together_lose_nothing_from_the_first_key_frame(
    js: JetStreamContext, nats_server: NatsServer, tmp_path: Path, media: Path
) -> None:
    proxy = make_proxy(tmp_path, nats_server, segment_seconds="2")
    report, events, rec = await joined_call(
        js, proxy, media, publishers=PUBLISHERS, seconds=SECONDS, load=LOAD
    )

    pubs = report["publishers"]
    assert len(pubs) == PUBLISHERS and all(not p["error"] and p["deleted"] for p in pubs), pubs
    for p in pubs:
        # what aiortc was handed is what went on the wire (frames, and packets as its own stats
        # count them), and the first frame on the wire was a key frame: "from the first key
        # frame" is every frame sent
        assert p["wire_frames"] == p["handed"] and p["wire_packets"] == p["stats_packets"], p
        assert p["first_is_keyframe"], p

    key = await recording_key(js, rec)
    written = count_written(proxy.rec_dir(rec), events, key, load_media(media))
    rows = shortfalls(report, written)
    ended = {
        (e.participant_id, e.track_id.rsplit("-", 1)[1]): e
        for e in events
        if isinstance(e, captures.TrackEnded)
    }
    print(f"16 publishers connected in {report['connected_s']:.1f} s")
    for r in rows:
        w = written.get((r.participant, r.kind))
        where = f" loop frames {w.first_index}..{w.last_index}" if w and r.kind == "video" else ""
        print(f"{r.participant} {r.kind}: sent {r.sent}, written {r.written}{where}")
    lost = [r for r in rows if r.lost or r.holes or not r.first_written_is_keyframe]
    assert not lost, f"{len(lost)} of {len(rows)} tracks lost frames: {lost}"
    for r in rows:
        w = written[(r.participant, r.kind)]
        assert w.event_frames == w.frames == ended[(r.participant, r.kind)].frames
        if r.kind == "video":
            # the very first frame sent (the loop's key frame) opens the recording
            assert w.first_index == 0, (r, w)
    print("packets lost (RTCP):", {k: e.packets_lost for k, e in ended.items() if e.packets_lost})
