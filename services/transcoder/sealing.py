"""The recording's files under its data key: segments read and verified, outputs written sealed.

Everything the transcoder reads from or writes to the backup goes through a ``RecordingFiles``:
segments are decrypted (``shared.capture_format``, bound to the recording id and their path in the
recording), and outputs are written in the chunkcrypt format (``docs/backup-encryption.md``), each
bound to ``<output folder>/<stored name>``, its path in the recording once the staging folder has
its final name. Plaintext reaches neither the disk nor the store.

The key is the caller's (the service fetches it per attempt and wipes it); this object only lends
it to the readers and writers, each of which copies and wipes its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from shared import chunkcrypt
from shared.backup import UnsafePath, inside, pseudonym
from shared.capture_format import MAGIC as PLAIN_SEGMENT_MAGIC
from shared.capture_format import Frame, SegmentFormatError, SegmentHeader, read_segment
from shared.chunkcrypt.seekable import SealedOutput
from shared.integrity import CHUNK, Digest, FileDigest, digest_file

from .errors import SegmentInvalid

# Media outputs are stored under a keyed pseudonym of their real name ("alice.webm" says who was
# on the call); the domain keeps these apart from the capture folders' pseudonyms.
STORED_NAME_DOMAIN = "output/"


@dataclass(frozen=True)
class SealedDigest:
    plain: FileDigest  # what the customer checks, and the sealed event carries
    stored_sha256: str  # of the bytes on disk: what the backup store checks in transit


class RecordingFiles:
    """One recording's folder, read and written under its data key. Not picklable, no key in
    ``repr``."""

    __slots__ = ("_key", "rec_dir", "recording_id")

    def __init__(self, rec_dir: Path, recording_id: str, key: bytes | bytearray) -> None:
        self.rec_dir = rec_dir
        self.recording_id = recording_id
        self._key = key

    def __repr__(self) -> str:
        return f"<RecordingFiles {self.recording_id}>"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("RecordingFiles holds a recording key and cannot be pickled")

    # -- names ------------------------------------------------------------------------------
    def stored_name(self, name: str) -> str:
        """The name a media output is kept under in the backup (stable for this recording)."""
        return pseudonym(self._key, STORED_NAME_DOMAIN + name)

    def segment_path(self, relative: str) -> Path:
        try:
            return inside(self.rec_dir, relative)
        except UnsafePath:
            raise SegmentInvalid(
                f"capture segment path {relative!r} leaves the recording folder"
            ) from None

    # -- segments ---------------------------------------------------------------------------
    def read(self, relative: str) -> tuple[SegmentHeader, Iterator[Frame]]:
        """Header and frames of a segment, every byte verified; ``SegmentInvalid`` (naming the
        file) for a missing, unreadable or tampered one, also from the frame iterator."""
        path = self.segment_path(relative)
        try:
            header, frames = read_segment(
                path, key=self._key, recording_id=self.recording_id, name=relative
            )
        except FileNotFoundError:
            raise SegmentInvalid(f"capture segment {relative} is missing") from None
        except chunkcrypt.TamperedError as exc:
            raise SegmentInvalid(
                f"capture segment {relative} fails authentication: {exc}"
            ) from None
        except (SegmentFormatError, ValueError) as exc:
            raise SegmentInvalid(f"capture segment {relative} is not readable: {exc}") from None
        return header, _checked(relative, frames)

    def verify_segment(self, relative: str, size: int, sha256: str) -> None:
        """The segment decrypts whole (every chunk authenticates, the last is the last) to the
        plaintext its event announced: a flipped byte, a cut, a segment moved from another path
        or recording, or an older version of it, all fail here, naming the file."""
        path = self.segment_path(relative)
        try:
            with path.open("rb") as fh:
                encrypted = fh.read(len(chunkcrypt.MAGIC)) == chunkcrypt.MAGIC
                fh.seek(0)
                if encrypted:
                    digest = Digest()
                    chunkcrypt.decrypt_to(
                        fh,
                        digest.update,
                        self._key,
                        recording_id=self.recording_id,
                        name=relative,
                    )
                    got = FileDigest(digest.sha256, digest.crc32, digest.size)
                else:
                    got = _legacy_digest(path, relative)
        except FileNotFoundError:
            raise SegmentInvalid(f"capture segment {relative} is missing") from None
        except chunkcrypt.TamperedError as exc:
            raise SegmentInvalid(
                f"capture segment {relative} fails authentication: {exc}"
            ) from None
        if got.size != size:
            raise SegmentInvalid(
                f"capture segment {relative} has {got.size} bytes, but {size} were written"
            )
        if got.sha256 != sha256:
            raise SegmentInvalid(
                f"capture segment {relative} has SHA-256 {got.sha256}, but {sha256} was written"
            )

    # -- outputs ----------------------------------------------------------------------------
    def create(self, path: Path, name: str) -> SealedOutput:
        """A new sealed file at ``path`` for a muxer; ``name`` is its path in the recording."""
        return SealedOutput(path, self._key, recording_id=self.recording_id, name=name)

    def write_small(self, path: Path, name: str, data: bytes) -> SealedDigest:
        """Seal ``data`` (a sidecar: checksums, manifest, signature) into a new file, synced."""
        with path.open("xb") as fh:
            out = _HashingFile(fh)
            with chunkcrypt.open_writer(
                cast(BinaryIO, out), self._key, recording_id=self.recording_id, name=name
            ) as w:
                w.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        plain = Digest()
        plain.update(data)
        return SealedDigest(
            FileDigest(plain.sha256, plain.crc32, plain.size), out.sha256.hexdigest()
        )

    def digest(self, path: Path, name: str) -> SealedDigest:
        """Read a finished sealed file back once: the plaintext's digest (every chunk checked,
        so what the event announces is what decrypts) and the stored bytes' SHA-256; fsyncs."""
        plain, stored = Digest(), hashlib.sha256()
        dec = chunkcrypt.Decryptor(self._key, recording_id=self.recording_id, name=name)
        try:
            with path.open("rb") as fh:
                while piece := fh.read(CHUNK):
                    stored.update(piece)
                    dec.feed(piece, plain.update)
                dec.finish(plain.update)
                os.fsync(fh.fileno())
        finally:
            dec.wipe()
        return SealedDigest(FileDigest(plain.sha256, plain.crc32, plain.size), stored.hexdigest())


class _HashingFile:
    """The sealed writer's target: hashes each ciphertext piece, then writes it (the writer
    reuses its buffer, so the piece is consumed before ``write`` returns)."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.sha256 = hashlib.sha256()

    def write(self, piece: bytes | bytearray | memoryview) -> int:
        self.sha256.update(piece)
        return self._fh.write(piece)


def _checked(relative: str, frames: Iterator[Frame]) -> Generator[Frame, None, None]:
    """``frames``, with a chunk that fails mid-way reported as the segment's fault."""
    try:
        yield from frames
    except chunkcrypt.TamperedError as exc:
        raise SegmentInvalid(f"capture segment {relative} fails authentication: {exc}") from None
    finally:
        with contextlib.suppress(Exception):
            frames.close()  # type: ignore[attr-defined]


def _legacy_digest(path: Path, relative: str) -> FileDigest:
    """A segment written before encryption: its event's SHA-256 still guards it."""
    with path.open("rb") as fh:
        if fh.read(len(PLAIN_SEGMENT_MAGIC)) != PLAIN_SEGMENT_MAGIC:
            raise SegmentInvalid(f"capture segment {relative} is not a capture segment")
    return digest_file(path)
