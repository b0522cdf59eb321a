"""The output folder: verify the capture, remux into a staging folder (and render the call's
composite), write SHA256SUMS, manifest.json and its Ed25519 signature manifest.json.sig, make it
durable, and rename it to its final name in one step. Every file is written encrypted under the
recording's key (``.sealing``), media files under pseudonymous names (``SealedFile.stored_as``);
the digests in the sealed event and the manifest are the plaintext's, read back by decrypting.

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

import functools
import io
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
from shared.integrity import FileDigest, sha256sums

from .composite import CompositePlan, render
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
from .remux import RemuxResult, remux
from .sealing import RecordingFiles
from .state import RecordingCapture, Segment

log = logging.getLogger(__name__)

STAGING_PREFIX = "output.tmp-"
ATTEMPT_PREFIX = "output-"  # output-<attempt>: one folder per transcoding attempt


@dataclass(frozen=True)
class Sealed:
    output: Path
    files: list[SealedFile]
    stored_sha256: dict[str, str]  # stored name -> SHA-256 of the bytes on disk (ciphertext)


def verify_segments(files: RecordingFiles, segments: list[Segment]) -> None:
    """Every segment decrypts, whole and authentic, to the size and SHA-256 its event announced
    (streamed, one pass each); else ``SegmentInvalid`` naming the file."""
    for seg in segments:
        files.verify_segment(seg.path, seg.size, seg.sha256)


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


def build_output(
    rec_dir: Path,
    state: RecordingCapture,
    plans: list[FilePlan],
    *,
    key: bytes | bytearray,
    signing_key: Ed25519PrivateKey,
    options: OutputOptions | None = None,
    composite: CompositePlan | None = None,
    max_bytes_per_s: int = 0,
    folder: str = "output",
    still_mine: Callable[[], None] = lambda: None,
) -> Sealed:
    """Verify, remux, render the composite and seal into ``rec_dir/folder``, every file
    encrypted under the recording's ``key`` (media files under pseudonymous names); raises
    ``SegmentInvalid`` (quarantine) before writing anything if a segment is missing or altered.
    ``still_mine`` raises when the attempt lost its lease: checked before anything is deleted
    and between files, so a stale attempt stops early. Blocking: run it in a thread."""
    files = RecordingFiles(rec_dir, state.recording_id, key)
    verify_segments(files, sorted(state.segments.values(), key=lambda s: (s.track_id, s.seq)))
    still_mine()
    clear_previous(rec_dir)
    staging = rec_dir / f"{STAGING_PREFIX}{secrets.token_hex(6)}"
    staging.mkdir()
    stored_as: dict[str, str] = {}  # real name -> stored name, media files only
    stored_sha256: dict[str, str] = {}

    def sealed_media(
        plan: FilePlan | CompositePlan, write: Callable[[io.RawIOBase], RemuxResult]
    ) -> MediaFile:
        stored = files.stored_name(plan.name)
        # The AAD binds the file's path in the recording as it will be once staging is renamed.
        path, name = staging / stored, f"{folder}/{stored}"
        with files.create(path, name) as fh:  # aborted (reads as truncated) if ``write`` fails
            result = write(fh)
        digest = files.digest(path, name)
        stored_as[plan.name] = stored
        stored_sha256[stored] = digest.stored_sha256
        return MediaFile(plan, digest.plain, result.duration_s)

    def sidecar(file_name: str, data: bytes) -> FileDigest:
        digest = files.write_small(staging / file_name, f"{folder}/{file_name}", data)
        stored_sha256[file_name] = digest.stored_sha256
        return digest.plain

    try:
        media: list[MediaFile] = []
        for plan in plans:
            still_mine()
            write = functools.partial(remux, plan, files, max_bytes_per_s=max_bytes_per_s)
            media.append(sealed_media(plan, write))
        if composite is not None:
            still_mine()
            draw = functools.partial(render, composite, files, max_bytes_per_s=max_bytes_per_s)
            media.append(sealed_media(composite, draw))
        sums = sidecar(
            SUMS_NAME, sha256sums((m.plan.name, m.digest.sha256) for m in media).encode()
        )
        key_id = signing.key_id(signing_key.public_key())
        text = manifest_bytes(build_manifest(state, media, signing_key_id=key_id, options=options))
        manifest = sidecar(MANIFEST_NAME, text)
        signature = sidecar(SIGNATURE_NAME, signing.sign(signing_key, text).encode())
        fsync_dir(staging)
        final = rec_dir / folder
        still_mine()
        os.rename(staging, final)
        fsync_dir(rec_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Sealed(final, sealed_files(media, sums, manifest, signature, stored_as), stored_sha256)


def remove_other_outputs(sealed: Path) -> None:
    """Once ``sealed`` is the sealed folder: delete the other attempts' finished folders."""
    if not sealed.parent.is_dir():
        return
    for child in sealed.parent.iterdir():
        other = child.name == "output" or child.name.startswith(ATTEMPT_PREFIX)
        if other and child != sealed and child.is_dir():
            log.info("removing an unsealed attempt's output", extra={"folder": child.name})
            shutil.rmtree(child, ignore_errors=True)
