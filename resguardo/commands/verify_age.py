"""``resguardo verify --identity KEYFILE DIR``: a recording sent to an ``encrypt_to`` destination.

Such a folder holds ``<name>.age`` files, ``manifest.json.age``, ``manifest.json.sig.age`` and a
clear ``SHA256SUMS`` of the ``.age`` files (docs/encrypt-to.md). Each ``.age`` file is read once:
its SHA-256 is checked against ``SHA256SUMS`` and the manifest while it is decrypted with the
identities in KEYFILE (as ``age-keygen`` writes them), and the plaintext's SHA-256 and size are
checked against the manifest. Nothing decrypted is written to disk; the identities never appear
in any message.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyrage
from pyrage import x25519

from shared.integrity import Digest

from ..cli import CliError
from ..progress import Progress

SUFFIX = ".age"
MANIFEST_AGE = "manifest.json.age"
SIGNATURE_AGE = "manifest.json.sig.age"
MAX_SIDECAR = 64 << 20


def is_encrypted_folder(directory: Path) -> bool:
    return (directory / MANIFEST_AGE).is_file()


def load_identities(path: Path) -> list[x25519.Identity]:
    """Every ``AGE-SECRET-KEY-1...`` line of an age identity file (``#`` lines are comments)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise CliError(f"Cannot read the identity file {path} ({reason}).") from None
    identities = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            # The line number only: the line may be a secret key with a typo.
            raise CliError(
                f"{path} line {n} is not an age X25519 identity (AGE-SECRET-KEY-1...); "
                "use a key file made by age-keygen."
            ) from None
    del text
    if not identities:
        raise CliError(f"{path} holds no age identity (AGE-SECRET-KEY-1... line).")
    return identities


class _Hashing(io.RawIOBase):
    """The ``.age`` file as read by the decryptor, hashed on the way (one pass over it)."""

    def __init__(self, fh: Any, progress: Progress | None) -> None:
        self._fh = fh
        self.digest = Digest()
        self._progress = progress

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n: int = self._fh.readinto(b)
        if n:
            self.digest.update(memoryview(b)[:n])
            if self._progress:
                self._progress.advance(n)
        return n


class _Sink(io.RawIOBase):
    """Where the plaintext goes: hashed and dropped."""

    def __init__(self, keep: bool) -> None:
        self.digest = Digest()
        self.kept = bytearray() if keep else None

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.digest.update(b)
        if self.kept is not None:
            if len(self.kept) + len(b) > MAX_SIDECAR:
                raise OSError("too large for a manifest")
            self.kept += b
        return len(b)


def decrypt(
    path: Path, identities: list[x25519.Identity], *, keep: bool = False, progress: bool = False
) -> tuple[Digest, Digest, bytes | None, str]:
    """(digest of the .age bytes, digest of the plaintext, the plaintext if ``keep``, why not
    decrypted: "" when it was)."""
    bar = Progress(f"verifying {path.name}", path.stat().st_size) if progress else None
    with path.open("rb") as fh:
        src, sink = _Hashing(fh, bar), _Sink(keep)
        why = ""
        try:
            pyrage.decrypt_io(src, sink, identities)  # type: ignore[arg-type]
        except (pyrage.DecryptError, OSError):
            why = (
                "cannot be decrypted with the identities in the key file: it was changed, "
                "or is not encrypted to them"
            )
        while src.readinto(bytearray(1 << 20)):  # finish hashing what the decryptor left
            pass
    if bar:
        bar.finish("ok" if not why else "MISMATCH")
    plain = bytes(sink.kept) if sink.kept is not None and not why else None
    return src.digest, sink.digest, plain, why


def verify_encrypted(
    directory: Path,
    identities: list[x25519.Identity],
    expected: dict[str, str],
    *,
    show_progress: bool = True,
) -> tuple[list[dict[str, Any]], bytes | None, bytes | None]:
    """One result per file, plus the decrypted manifest and signature (None when they could
    not be had) for the caller's signature check. ``expected`` is the folder's SHA256SUMS
    (``verify.load_sums``): the hashes of the ``.age`` files as downloaded."""
    results: list[dict[str, Any]] = []
    sidecars: dict[str, bytes | None] = {}
    for name in (MANIFEST_AGE, SIGNATURE_AGE):
        path = directory / name
        if not path.is_file():
            results.append({"name": name, "ok": False, "reason": "missing"})
            sidecars[name] = None
            continue
        sealed, _, plain, why = decrypt(path, identities, keep=True)
        if not why and expected.get(name) != sealed.sha256:
            why = "SHA-256 does not match SHA256SUMS"
        results.append({"name": name, "ok": not why, "reason": why, "sha256": sealed.sha256})
        sidecars[name] = None if why else plain
    manifest_text, signature = sidecars[MANIFEST_AGE], sidecars[SIGNATURE_AGE]
    entries: list[dict[str, Any]] = []
    if manifest_text is not None:
        try:
            manifest = json.loads(manifest_text)
            entries = [f for f in manifest["files"] if isinstance(f.get("encrypted"), dict)]
        except (ValueError, KeyError, TypeError, AttributeError):
            results.append(
                {"name": MANIFEST_AGE, "ok": False, "reason": "manifest.json is not valid JSON"}
            )
    listed = {MANIFEST_AGE, SIGNATURE_AGE}
    for entry in entries:
        results.append(_check_file(directory, entry, expected, identities, show_progress))
        listed.add(str(entry["encrypted"].get("name")))
    if manifest_text is not None:
        for name in expected:
            if name not in listed:
                results.append(
                    {"name": name, "ok": False, "reason": "in SHA256SUMS but not in manifest.json"}
                )
    return results, manifest_text, signature


def _check_file(
    directory: Path,
    entry: dict[str, Any],
    expected: dict[str, str],
    identities: list[x25519.Identity],
    show_progress: bool,
) -> dict[str, Any]:
    age = entry["encrypted"]
    name = str(age.get("name"))
    path = directory / name
    if not name.endswith(SUFFIX) or not path.resolve().is_relative_to(directory.resolve()):
        return {"name": name, "ok": False, "reason": "not a .age file in this folder"}
    if not path.is_file():
        return {"name": name, "ok": False, "reason": "missing"}
    sealed, plain, _, why = decrypt(path, identities, progress=show_progress)
    # The transport checks first: a changed file is named as changed, then as undecryptable.
    if expected.get(name) != sealed.sha256:
        why = "SHA-256 does not match SHA256SUMS" if name in expected else "not in SHA256SUMS"
    elif age.get("sha256") != sealed.sha256 or age.get("size") != sealed.size:
        why = "SHA-256 or size does not match manifest.json"
    elif not why and (entry.get("sha256") != plain.sha256 or entry.get("size") != plain.size):
        why = "the decrypted file does not match the plaintext SHA-256 and size in manifest.json"
    return {
        "name": name,
        "ok": not why,
        "reason": why,
        "sha256": sealed.sha256,
        "size": sealed.size,
        "plaintext_sha256": plain.sha256 if not why else None,
        "plaintext_size": plain.size if not why else None,
    }
