"""Reading what the transcoder sealed: its files are encrypted under the recording's key and media
files have pseudonymous names, so tests decrypt a copy (under the real names) to probe it, and
search the backup for anything that is not."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from services.transcoder.output import Sealed
from shared import chunkcrypt
from shared.events.transcodes import SealedFile

from .capture_factory import HEIGHT, WIDTH, Capture

# Known plaintext of every capture and output, none of which may be in the backup: codec headers
# and markers long enough (>= 4 bytes) that random ciphertext does not contain them by chance.
MARKERS: tuple[bytes, ...] = (
    b"OpusHead",
    b"\x1a\x45\xdf\xa3",  # the EBML (WebM/Matroska) header
    b"webm",
    b"matroska",
    b"ftypisom",  # mp4
    # A VP8 key frame's start code with this capture's picture size.
    b"\x9d\x01\x2a" + WIDTH.to_bytes(2, "little") + HEIGHT.to_bytes(2, "little"),
    b"\x00\x00\x00\x01\x67",  # H.264: start code and SPS
    b"\x00\x00\x00\x01\x65",  # H.264: start code and IDR slice
    b"RGCAP1",  # the plaintext segment format
    b"resguardo.recording",  # the manifest's format field
)


def plain_copy(
    capture: Capture, output: Path, files: Iterable[SealedFile], dest: Path | None = None
) -> Path:
    """Decrypt every sealed file of ``output`` into ``dest`` under its real name (default: next
    to the recording's folder, outside it); returns ``dest``."""
    if dest is None:
        dest = capture.rec_dir.parent / f"{capture.recording_id}.plain" / output.name
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        chunkcrypt.decrypt_file(
            output / f.stored_name,
            dest / f.name,
            capture.key,
            recording_id=capture.recording_id,
            name=f"{output.name}/{f.stored_name}",
        )
    return dest


def private_words(capture: Capture) -> list[bytes]:
    """Who was on the call: participant ids and display names (long enough to search for)."""
    words = set()
    for p in capture.participants:
        words.add(p.participant_id.encode())
        words.add((p.display_name or p.participant_id.title()).encode())
    return sorted(w for w in words if len(w) >= 8)


def frame_samples(capture: Capture, n: int = 4) -> list[bytes]:
    """Pieces of frames the publisher sent (64 bytes from inside each of a few frames)."""
    out: list[bytes] = []
    for seg in capture.segments[:n]:
        _, frames = capture.files.read(seg.path)
        for frame in frames:
            if len(frame.data) >= 96:
                out.append(frame.data[16:80])
                break
    return out


def plaintext_found(root: Path, needles: Iterable[bytes]) -> list[str]:
    """Every file under ``root`` whose name or content holds one of ``needles``."""
    wanted = list(needles)
    found = []
    for path in sorted(p for p in root.rglob("*")):
        rel = path.relative_to(root).as_posix().encode()
        for w in wanted:
            if w.lower() in rel.lower():
                found.append(f"name {rel.decode()} holds {w!r}")
        if path.is_file():
            data = path.read_bytes()
            found.extend(f"{rel.decode()} holds {w!r}" for w in wanted if w in data)
    return found


def assert_no_plaintext(root: Path, capture: Capture, *extra: bytes) -> None:
    needles = [*MARKERS, *private_words(capture), *frame_samples(capture), *extra]
    found = plaintext_found(root, needles)
    assert found == [], found[:20]


def opened(capture: Capture, sealed: Sealed) -> Sealed:
    """``sealed`` with ``output`` pointing at a decrypted copy under the real names (what the
    customer gets), for tests that probe the files."""
    return replace(sealed, output=plain_copy(capture, sealed.output, sealed.files))
