"""The output folder: verify the capture, remux into a staging folder (and render the call's
composite), write SHA256SUMS, manifest.json and its Ed25519 signature manifest.json.sig, make it
durable, and rename it to its final name in one step.

A process killed at any point leaves either no output folder or a complete one; a staging folder
left behind by a crash is deleted by the next run.

Many instances: the service names each attempt's folder ``output-<attempt>`` (``folder``), never
``output/``. Two attempts on one recording can both be writing (one paused past its lease, see
``shared.leases``), and with an object store (``shared.backupstore.spool``) each puts its folder's
files under the keys of that folder: with one fixed name the late one would overwrite the files of
the one that sealed, and the sealed event's SHA-256s would no longer match the backup. Unique
folders make that impossible; the sealed event's ``output_dir`` names the one that counts. Only
after a seal is stored are the other attempts' folders deleted (``remove_other_outputs``): before,
any of them might still be the one sealed.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared import signing
from shared.backup import output_dir
from shared.capture_format import fsync_dir
from shared.events.transcodes import SealedFile
from shared.integrity import CHUNK, Digest, FileDigest, digest_file, sha256sums

from .composite import CompositePlan, render
from .errors import SegmentInvalid
from .manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    SUMS_NAME,
    MediaFile,
    build_manifest,
    manifest_bytes,
    sealed_files,
)
from .plan import FilePlan, OutputOptions
from .remux import remux, segment_path
from .state import RecordingCapture, Segment

log = logging.getLogger(__name__)

STAGING_PREFIX = "output.tmp-"
ATTEMPT_PREFIX = "output-"  # output-<attempt>: one folder per transcoding attempt


@dataclass(frozen=True)
class Sealed:
    output: Path
    files: list[SealedFile]


def verify_segments(rec_dir: Path, segments: list[Segment]) -> None:
    """Every segment exists with the size and SHA-256 its event announced (streamed, one pass)."""
    for seg in segments:
        path = segment_path(rec_dir, seg.path)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise SegmentInvalid(f"capture segment {seg.path} is missing") from None
        if size != seg.size:
            raise SegmentInvalid(
                f"capture segment {seg.path} has {size} bytes, but {seg.size} were written"
            )
        digest = digest_file(path)
        if digest.sha256 != seg.sha256:
            raise SegmentInvalid(
                f"capture segment {seg.path} has SHA-256 {digest.sha256}, "
                f"but {seg.sha256} was written"
            )


def clear_previous(rec_dir: Path) -> None:
    """Remove staging folders and an unsealed ``output/`` left by a crashed run."""
    if not rec_dir.is_dir():
        return
    for child in rec_dir.iterdir():
        if child.name.startswith(STAGING_PREFIX) and child.is_dir():
            log.info("removing a crashed run's staging folder", extra={"folder": child.name})
            shutil.rmtree(child)
    out = output_dir(rec_dir)
    if out.exists():
        log.info("removing an output folder that was never sealed", extra={"folder": str(out)})
        shutil.rmtree(out)


def _sync_digest(path: Path) -> FileDigest:
    digest = Digest()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
        os.fsync(fh.fileno())
    return FileDigest(digest.sha256, digest.crc32, digest.size)


def _write_synced(path: Path, data: bytes) -> FileDigest:
    digest = Digest()
    digest.update(data)
    with path.open("xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return FileDigest(digest.sha256, digest.crc32, digest.size)


def build_output(
    rec_dir: Path,
    state: RecordingCapture,
    plans: list[FilePlan],
    *,
    signing_key: Ed25519PrivateKey,
    options: OutputOptions | None = None,
    composite: CompositePlan | None = None,
    max_bytes_per_s: int = 0,
    folder: str = "output",
    still_mine: Callable[[], None] = lambda: None,
) -> Sealed:
    """Verify, remux, render the composite and seal into ``rec_dir/folder``; raises
    ``SegmentInvalid`` (quarantine) before writing anything if a segment is missing or altered.
    ``still_mine`` raises when the attempt lost its lease: checked before anything is deleted
    and between files, so a stale attempt stops early. Blocking: run it in a thread."""
    verify_segments(rec_dir, sorted(state.segments.values(), key=lambda s: (s.track_id, s.seq)))
    still_mine()
    clear_previous(rec_dir)
    staging = rec_dir / f"{STAGING_PREFIX}{secrets.token_hex(6)}"
    staging.mkdir()
    try:
        media: list[MediaFile] = []
        for plan in plans:
            still_mine()
            path = staging / plan.name
            result = remux(plan, rec_dir, path, max_bytes_per_s=max_bytes_per_s)
            media.append(MediaFile(plan, _sync_digest(path), result.duration_s))
        if composite is not None:
            still_mine()
            path = staging / composite.name
            result = render(composite, rec_dir, path, max_bytes_per_s=max_bytes_per_s)
            media.append(MediaFile(composite, _sync_digest(path), result.duration_s))
        sums = _write_synced(
            staging / SUMS_NAME, sha256sums((m.plan.name, m.digest.sha256) for m in media).encode()
        )
        key_id = signing.key_id(signing_key.public_key())
        text = manifest_bytes(build_manifest(state, media, signing_key_id=key_id, options=options))
        manifest = _write_synced(staging / MANIFEST_NAME, text)
        signature = _write_synced(
            staging / SIGNATURE_NAME, signing.sign(signing_key, text).encode()
        )
        fsync_dir(staging)
        final = rec_dir / folder
        still_mine()
        os.rename(staging, final)
        fsync_dir(rec_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Sealed(final, sealed_files(media, sums, manifest, signature))


def remove_other_outputs(sealed: Path) -> None:
    """Once ``sealed`` is the sealed folder: delete the other attempts' finished folders."""
    if not sealed.parent.is_dir():
        return
    for child in sealed.parent.iterdir():
        other = child.name == "output" or child.name.startswith(ATTEMPT_PREFIX)
        if other and child != sealed and child.is_dir():
            log.info("removing an unsealed attempt's output", extra={"folder": child.name})
            shutil.rmtree(child, ignore_errors=True)
