"""Memory stays flat in recording length: remuxing 60 s of capture peaks at about the same
resident size as 10 s, although six times more bytes flow through (measured in a child process,
its own VmHWM; a bound with a generous margin, not a timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.transcoder.output import build_output
from services.transcoder.plan import plan_files
from services.transcoder.state import fold
from shared.events import decode, encode

from .capture_factory import ParticipantSpec, SessionSpec, make_capture

MIB = 1024 * 1024


def child(events_file: str) -> None:
    """In a fresh process: seal the capture whose events are in ``events_file``; print the
    process's peak resident size in bytes."""
    lines = Path(events_file).read_bytes().splitlines()
    state = fold(decode(line) for line in lines)
    info = json.loads(Path(events_file).with_suffix(".json").read_text())
    rec_dir = Path(info["rec_dir"])
    key = bytes.fromhex(info["key"])  # a test capture's random key, in the test's own folder
    build_output(
        rec_dir, state, plan_files(state), key=key, signing_key=Ed25519PrivateKey.generate()
    )
    print(own_peak_rss())


def own_peak_rss() -> int:
    """This process's peak resident size, in bytes. Not ru_maxrss: Linux carries that across
    fork and exec, so a child would report its parent's size (the bench's ~120 MiB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def peak_rss(tmp: Path, seconds: int) -> tuple[int, int]:
    """(peak RSS of sealing a ``seconds`` long capture, bytes of capture read)."""
    c = make_capture(
        tmp / f"b{seconds}",
        [ParticipantSpec("alice", sessions=(SessionSpec(0, seconds),), content="noise")],
        segment_s=5.0,
    )
    events = tmp / f"events{seconds}.jsonl"
    events.write_bytes(b"\n".join(encode(e) for e in c.events))
    events.with_suffix(".json").write_text(
        json.dumps({"rec_dir": str(c.rec_dir), "key": c.key.hex()})
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from tests.transcoder.test_memory import child; child(sys.argv[1])",
            str(events),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return int(result.stdout.strip().splitlines()[-1]), sum(s.size for s in c.segments)


def test_peak_memory_does_not_grow_with_recording_length(tmp_path: Path) -> None:
    short_rss, short_bytes = peak_rss(tmp_path, 10)
    long_rss, long_bytes = peak_rss(tmp_path, 60)
    assert long_bytes - short_bytes > 90 * MIB  # the long one really moves ~100 MB more
    # Flat: far less growth than the extra data (holding it would add >= 90 MiB).
    assert long_rss - short_rss < 20 * MIB, (short_rss / MIB, long_rss / MIB)
