"""``encrypt_to`` destinations: every file is sent as ``<name>.age``, only the customer can open.

A destination that lists age recipients gets, instead of the sealed files as they are:

- each media file encrypted to those recipients in the standard age format (``pyrage``), as
  ``<name>.age``;
- ``manifest.json.age``: the transcoder's manifest (checked against its signature first) with,
  for each file, the uploaded ``.age`` file's name, SHA-256 and size next to the plaintext's
  ones, and an ``encryption`` block naming the recipients; re-signed with the same operator key
  (``manifest.json.sig.age``), since it now says more than the transcoder signed;
- ``SHA256SUMS`` in clear, listing the ``.age`` files as uploaded, so ``sha256sum -c`` works on a
  download before anything is decrypted.

Each file is encrypted once per attempt into a private staging folder (``<data dir>/upload-
staging``; ciphertext only) and then sent as an ordinary local file: the provider's checksum in
transit (CRC-32, MD5), the confirmation and ``verify=readback`` all apply to the bytes actually
sent, and resume state is keyed by the ciphertext's SHA-256, so a retry (a new encryption, new
bytes) never reuses parts of an older one. At most one media file is staged at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyrage
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pyrage import x25519

from shared import signing
from shared.events.transcodes import SealedFile
from shared.integrity import Digest, sha256sums
from shared.providers import FieldError, check_age_recipients

from .config import UploaderConfig
from .errors import PermanentUploadError, TransientUploadError
from .source import LocalSource, Source

SUFFIX = ".age"
FORMAT = "age-encryption.org/v1"
CHUNK = 1 << 20  # plaintext pulled from the source per step; pyrage reads it 8 KiB at a time
PULL_TIMEOUT_S = 600.0  # a worker thread never waits forever on a loop that went away
MAX_SIDECAR = 64 << 20  # manifest.json and its signature are read whole; they are small
STAGING = "upload-staging"
STALE_S = 24 * 3600
SIDECARS = ("checksums", "manifest", "signature")


def recipients_of(config: dict[str, Any]) -> list[str] | None:
    """The destination's ``encrypt_to``, checked again (the grant may predate a stricter check);
    None when it sends files as they are."""
    value = config.get("encrypt_to")
    if value in (None, "", []):
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PermanentUploadError("the destination's encrypt_to must be a list of age recipients")
    try:
        check_age_recipients("encrypt_to", value)
    except FieldError as exc:
        raise PermanentUploadError(f"the destination's {exc}; fix the destination") from None
    return list(value)


class _Pull(io.RawIOBase):
    """What pyrage reads, in a worker thread: plaintext chunks pulled from an async iterator on
    the event loop (a local file or a backup-store stream), buffered so its 8 KiB reads do not
    each cross threads."""

    def __init__(self, pull: Callable[[], bytes]) -> None:
        self._pull = pull
        self._buf = memoryview(b"")
        self._done = False
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf and not self._done:
            try:
                chunk = self._pull()
            except BaseException as exc:  # kept: pyrage only reports "I/O error"
                self.error = exc
                raise OSError("the plaintext could not be read") from None
            self._done = not chunk
            self._buf = memoryview(chunk)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


class _Digesting(io.RawIOBase):
    """The staged ciphertext file, digested (SHA-256, CRC-32, size) as pyrage writes it."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh
        self.digest = Digest()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.digest.update(b)
        n: int = self._fh.write(b)
        return n


def _age_sealed(plain: SealedFile, d: Digest) -> SealedFile:
    return SealedFile(
        name=plain.name + SUFFIX,
        role=plain.role,
        size=d.size,
        sha256=d.sha256,
        crc32=d.crc32,
        participant_id=plain.participant_id,
        duration_s=plain.duration_s,
        content_type="application/octet-stream",  # age has no registered media type
    )


def _encrypt_to_file(
    src: io.RawIOBase | io.BytesIO, out: Path, recipients: Sequence[str]
) -> Digest:
    keys = [x25519.Recipient.from_str(r) for r in recipients]
    with out.open("xb") as fh:
        sink = _Digesting(fh)
        pyrage.encrypt_io(src, sink, keys)  # type: ignore[arg-type]
        fh.flush()
    return sink.digest


@dataclass
class Staging:
    """One job's private folder of staged ``.age`` files, removed when the job ends."""

    path: Path
    recipients: list[str]
    _n: int = field(default=0)

    def _next(self, name: str) -> Path:
        self._n += 1
        return self.path / f"{self._n:04d}-{name}{SUFFIX}"

    async def encrypt(self, source: Source, plain: SealedFile) -> tuple[Path, SealedFile]:
        """Stream ``source`` through age into a staged file; the plaintext must be the sealed
        one (``verify``) before the ciphertext may be sent."""
        await source.check()
        reader = source.reader(CHUNK)
        chunks = reader.chunks()
        loop = asyncio.get_running_loop()

        async def step() -> bytes:
            try:
                return bytes(await anext(chunks))
            except StopAsyncIteration:
                return b""

        def pull() -> bytes:
            return _on_loop(loop, step())

        src = _Pull(pull)
        out = self._next(plain.name)
        try:
            digest = await asyncio.to_thread(_encrypt_to_file, src, out, self.recipients)
        except (pyrage.EncryptError, OSError) as exc:
            if isinstance(src.error, (PermanentUploadError, TransientUploadError)):
                raise src.error from None
            raise TransientUploadError(
                f"{plain.name} could not be encrypted to the destination's recipients "
                f"({type(exc).__name__}); it will be retried"
            ) from None
        finally:
            with contextlib.suppress(RuntimeError):  # a cancelled thread may still be pulling
                await chunks.aclose()  # type: ignore[attr-defined]
        reader.verify()  # the plaintext read is exactly the sealed file
        return out, _age_sealed(plain, digest)

    async def encrypt_bytes(self, data: bytes, plain: SealedFile) -> tuple[Path, SealedFile]:
        out = self._next(plain.name)
        digest = await asyncio.to_thread(_encrypt_to_file, io.BytesIO(data), out, self.recipients)
        return out, _age_sealed(plain, digest)

    def write_clear(self, name: str, data: bytes, role: Any, content_type: str) -> LocalSource:
        out = self.path / name
        out.write_bytes(data)
        d = Digest()
        d.update(data)
        sealed = SealedFile(
            name=name,
            role=role,
            size=d.size,
            sha256=d.sha256,
            crc32=d.crc32,
            content_type=content_type,
        )
        return LocalSource(out, sealed)


def _on_loop(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, bytes]) -> bytes:
    return asyncio.run_coroutine_threadsafe(coro, loop).result(PULL_TIMEOUT_S)


async def read_whole(source: Source) -> bytes:
    """A small sealed file (manifest, signature), checked against its sealed SHA-256."""
    await source.check()
    if source.sealed.size > MAX_SIDECAR:
        raise PermanentUploadError(f"{source.sealed.name} is too large to be a manifest")
    reader = source.reader(CHUNK)
    parts = [bytes(c) async for c in reader.chunks()]
    reader.verify()
    return b"".join(parts)


def age_manifest(
    original: bytes,
    encrypted: dict[str, SealedFile],
    recipients: list[str],
    key: Ed25519PrivateKey,
    signature: bytes,
) -> bytes:
    """The transcoder's manifest with each file's uploaded ``.age`` copy beside it. Re-signed
    only if the transcoder's signature over ``original`` holds under the same key: the uploader
    vouches for nothing the transcoder did not sign, beyond the ciphertexts it made itself."""
    public = signing.public_pem(key)
    if not signing.verify(public, original, signature.decode("ascii", "replace")):
        raise PermanentUploadError(
            "manifest.json's signature does not verify under the uploader's signing key; give "
            "the uploader the transcoder's key (RESGUARDO_SIGNING_KEY_FILE); the recording "
            "was not sent"
        )
    try:
        manifest = json.loads(original)
        files = manifest["files"]
    except (ValueError, KeyError, TypeError):
        raise PermanentUploadError(
            "manifest.json is not a manifest; the recording was not sent"
        ) from None
    for entry in files:
        age = encrypted.get(str(entry.get("name"))) if isinstance(entry, dict) else None
        if age is None:
            raise PermanentUploadError(
                "manifest.json lists a file that was not sealed; the recording was not sent"
            )
        entry["encrypted"] = {"name": age.name, "sha256": age.sha256, "size": age.size}
    manifest["encryption"] = {
        "format": FORMAT,
        "recipients": recipients,
        "suffix": SUFFIX,
        "transcoder_manifest_sha256": hashlib.sha256(original).hexdigest(),
    }
    return (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode()


def load_signing_key(data_dir: Path, override: Path | None) -> Ed25519PrivateKey:
    """The operator's key, as the transcoder uses it; never created here (a new key would sign
    manifests no one can check against the published one)."""
    path = signing.key_path(data_dir, override)
    if not path.exists():
        raise PermanentUploadError(
            "this destination encrypts to age recipients, so the uploader re-signs its "
            f"manifest, but the signing key {path} is not there; give the uploader the "
            "transcoder's key (RESGUARDO_SIGNING_KEY_FILE); the recording was not sent"
        )
    try:
        return signing.load_or_create(path)
    except (OSError, ValueError) as exc:
        raise PermanentUploadError(
            f"the signing key {path} cannot be used ({type(exc).__name__})"
        ) from None


async def encrypted_files(
    files: list[SealedFile],
    source_of: Callable[[SealedFile], Source],
    staging: Staging,
    key: Callable[[], Ed25519PrivateKey],
) -> AsyncIterator[tuple[Source, SealedFile]]:
    """What to send, in order: each media ``.age`` (its staged file removed once sent), then
    ``manifest.json.age``, ``manifest.json.sig.age`` and the ``SHA256SUMS`` of them all."""
    by_role = {f.role: f for f in files if f.role in SIDECARS}
    sums: list[tuple[str, str]] = []
    encrypted: dict[str, SealedFile] = {}
    for f in files:
        if f.role in SIDECARS:
            continue
        path, age = await staging.encrypt(source_of(f), f)
        encrypted[f.name] = age
        sums.append((age.name, age.sha256))
        yield LocalSource(path, age), age
        path.unlink(missing_ok=True)
    manifest, sig_file = by_role.get("manifest"), by_role.get("signature")
    if manifest is not None:
        if sig_file is None:
            raise PermanentUploadError(
                "manifest.json was sealed without its signature; the recording was not sent"
            )
        original = await read_whole(source_of(manifest))
        sig = await read_whole(source_of(sig_file))
        private = key()
        text = age_manifest(original, encrypted, staging.recipients, private, sig)
        for plain, data in ((manifest, text), (sig_file, signing.sign(private, text).encode())):
            path, age = await staging.encrypt_bytes(data, plain)
            sums.append((age.name, age.sha256))
            yield LocalSource(path, age), age
    checksums = by_role.get("checksums")
    name = checksums.name if checksums is not None else "SHA256SUMS"
    local = staging.write_clear(
        name, sha256sums(sums).encode(), "checksums", "text/plain; charset=utf-8"
    )
    yield local, local.sealed


@contextlib.asynccontextmanager
async def staging_dir(data_dir: Path, recipients: list[str]) -> AsyncIterator[Staging]:
    root = data_dir / STAGING
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True, mode=0o700)
    path = Path(await asyncio.to_thread(tempfile.mkdtemp, dir=root, prefix="job-"))
    try:
        yield Staging(path, recipients)
    finally:
        await asyncio.to_thread(shutil.rmtree, path, True)


def clean_stale(data_dir: Path, now: float | None = None) -> int:
    """Staging folders a killed job left behind (ciphertext only), older than a day."""
    root = data_dir / STAGING
    if not root.is_dir():
        return 0
    cutoff = (now or time.time()) - STALE_S
    removed = 0
    for child in root.iterdir():
        with contextlib.suppress(OSError):
            if child.is_dir() and child.stat().st_mtime < cutoff:
                shutil.rmtree(child, ignore_errors=True)
                removed += 1
    return removed


async def _as_sealed(
    files: list[SealedFile], source_of: Callable[[SealedFile], Source]
) -> AsyncIterator[tuple[Source, SealedFile]]:
    for f in files:
        yield source_of(f), f


@contextlib.asynccontextmanager
async def sending(
    files: list[SealedFile],
    source_of: Callable[[SealedFile], Source],
    config: dict[str, Any],
    cfg: UploaderConfig,
) -> AsyncIterator[AsyncIterator[tuple[Source, SealedFile]]]:
    """What this destination is sent, in order: the sealed files as they are, or (with
    ``encrypt_to``) their age-encrypted copies, staged one at a time."""
    recipients = recipients_of(config)
    if recipients is None:
        yield _as_sealed(files, source_of)
        return
    async with staging_dir(cfg.data_dir, recipients) as staging:
        gen = encrypted_files(
            files, source_of, staging, lambda: load_signing_key(cfg.data_dir, cfg.signing_key_file)
        )
        try:
            yield gen
        finally:
            await gen.aclose()  # type: ignore[attr-defined]
