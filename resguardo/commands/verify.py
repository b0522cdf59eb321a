"""``resguardo verify DIR``: check a downloaded recording against SHA256SUMS and manifest.json,
and manifest.json's Ed25519 signature (manifest.json.sig). With ``--identity KEYFILE``, a
recording sent to an ``encrypt_to`` destination: its ``.age`` files are decrypted and both the
ciphertexts and the plaintexts are checked (``verify_age``).

The public key comes from ``--public-key FILE`` (as printed by ``resguardo keys show``) or, without
it, from the API (``GET /v1/keys/signing``); if neither is available the files are still checked
and the output says plainly that the signature was not.

Exit 0 when every file matches (and the signature, when checked); otherwise exit 1 and name each
file that does not.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared import signing
from shared.integrity import Digest, iter_file, parse_sha256sums

from ..cli import CliError
from ..progress import Progress
from . import verify_age
from .verify_age import MANIFEST_AGE

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.json.sig"
KEY_ENDPOINT = "/v1/keys/signing"


@dataclass(frozen=True)
class PublicKey:
    pem: str
    key_id: str
    source: str  # the file's path, or "the API"


def parse_public_key(pem: str, source: str) -> PublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except ValueError:
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise CliError(
            f"{source} does not hold an Ed25519 public key in PEM form; use the key printed by "
            "`resguardo keys show`."
        )
    return PublicKey(pem, signing.key_id(key), source)


def key_from_file(path: Path) -> PublicKey:
    try:
        text = path.read_text()
    except OSError as exc:
        raise CliError(f"Cannot read the public key file {path} ({exc.strerror}).") from None
    return parse_public_key(text, str(path))


def _pem_in(reply: Any) -> str | None:
    if isinstance(reply, str):
        return reply
    if isinstance(reply, dict):
        for field in ("public_key_pem", "public_key", "pem"):
            value = reply.get(field)
            if isinstance(value, str) and "BEGIN PUBLIC KEY" in value:
                return value
    return None


def key_from_api() -> tuple[PublicKey | None, str]:
    """The operator's public key from the API, or None and why it could not be had."""
    from ..client import ApiClient  # the CLI's HTTPS client; only needed on this path

    try:
        reply = ApiClient.from_env().request("GET", KEY_ENDPOINT)
    except CliError as exc:
        return None, str(exc)
    pem = _pem_in(reply)
    if pem is None:
        return None, f"the API's answer to GET {KEY_ENDPOINT} holds no public key"
    try:
        return parse_public_key(pem, "the API"), ""
    except CliError as exc:
        return None, str(exc)


def check_signature(directory: Path, key: PublicKey) -> dict[str, Any]:
    """The result line for manifest.json's signature under ``key``."""
    manifest_path, sig_path = directory / MANIFEST_NAME, directory / SIGNATURE_NAME
    if not manifest_path.is_file():
        return {"name": MANIFEST_NAME, "ok": False, "reason": "missing"}
    if not sig_path.is_file():
        return {
            "name": SIGNATURE_NAME,
            "ok": False,
            "reason": "missing: the manifest's signature cannot be checked",
        }
    return signature_outcome(manifest_path.read_bytes(), sig_path.read_text(errors="replace"), key)


def signature_outcome(
    data: bytes, signature: str, key: PublicKey, name: str = MANIFEST_NAME
) -> dict[str, Any]:
    """The result line for a manifest's bytes ``data`` and its base64 ``signature``."""
    if signing.verify(key.pem, data, signature):
        return {"name": SIGNATURE_NAME, "ok": True, "reason": "", "key_id": key.key_id}
    reason = f"signature does not match: {MANIFEST_NAME} was changed or signed by another key"
    try:
        claimed = json.loads(data).get("signing_key_id")
    except (ValueError, AttributeError):
        claimed = None
    if isinstance(claimed, str) and claimed and claimed != key.key_id:
        reason = (
            f"signature does not match: {MANIFEST_NAME} names key {claimed}, "
            f"but the public key from {key.source} is {key.key_id}"
        )
    return {"name": name, "ok": False, "reason": reason}


def load_sums(directory: Path) -> dict[str, str]:
    """The folder's SHA256SUMS (name -> hex), or the sentence that says what is wrong."""
    sums_path = directory / "SHA256SUMS"
    if not sums_path.is_file():
        raise CliError(
            f"{directory} has no SHA256SUMS file; point verify at a downloaded recording folder."
        )
    try:
        return parse_sha256sums(sums_path.read_text())
    except ValueError as exc:
        raise CliError(f"SHA256SUMS is malformed ({exc}); download it again.") from None


def verify_dir(directory: Path, *, show_progress: bool = True) -> list[dict[str, Any]]:
    """One result per file: {name, ok, reason}."""
    expected = load_sums(directory)
    manifest_files: dict[str, dict[str, Any]] = {}
    manifest_path = directory / MANIFEST_NAME
    results: list[dict[str, Any]] = []
    if not manifest_path.is_file():
        results.append({"name": MANIFEST_NAME, "ok": False, "reason": "missing"})
    else:
        try:
            manifest = json.loads(manifest_path.read_text())
            manifest_files = {f["name"]: f for f in manifest.get("files", [])}
        except (ValueError, KeyError, TypeError):
            results.append(
                {"name": "manifest.json", "ok": False, "reason": "manifest.json is not valid JSON"}
            )
    for name, sha in expected.items():
        path = directory / name
        if not path.resolve().is_relative_to(directory.resolve()):
            results.append({"name": name, "ok": False, "reason": "path leaves the folder"})
            continue
        if not path.is_file():
            results.append({"name": name, "ok": False, "reason": "missing"})
            continue
        digest = Digest()
        progress = Progress(f"verifying {name}", path.stat().st_size) if show_progress else None
        for chunk in iter_file(path, digest):
            if progress:
                progress.advance(len(chunk))
        reason = ""
        if digest.sha256 != sha:
            reason = "SHA-256 does not match SHA256SUMS"
        entry = manifest_files.get(name)
        if not reason and entry is not None:
            if entry.get("sha256") != digest.sha256:
                reason = "SHA-256 does not match manifest.json"
            elif entry.get("size") not in (None, digest.size):
                reason = "size does not match manifest.json"
        if progress:
            progress.finish("ok" if not reason else "MISMATCH")
        results.append(
            {
                "name": name,
                "ok": not reason,
                "reason": reason,
                "sha256": digest.sha256,
                "size": digest.size,
            }
        )
    for name in manifest_files:
        if name not in expected:
            results.append(
                {
                    "name": name,
                    "ok": False,
                    "reason": "listed in manifest.json but not in SHA256SUMS",
                }
            )
    return results


def _run(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    if not directory.is_dir():
        raise CliError(f"{directory} is not a folder; pass the folder you downloaded.")
    key: PublicKey | None
    if args.public_key:
        key, why_not = key_from_file(Path(args.public_key)), ""
    else:
        key, why_not = key_from_api()
    signature: dict[str, Any] = {"checked": key is not None}
    if args.identity:
        # Sent to an encrypt_to destination: decrypt and check both layers (verify_age).
        identities = verify_age.load_identities(Path(args.identity))
        results, text, sig = verify_age.verify_encrypted(
            directory, identities, load_sums(directory), show_progress=not args.json
        )
        del identities
        outcome: dict[str, Any] | None = None
        if key is not None and text is not None and sig is not None:
            outcome = signature_outcome(text, sig.decode(errors="replace"), key, MANIFEST_AGE)
        elif key is not None:
            outcome = {"name": SIGNATURE_NAME, "ok": False, "reason": "no manifest to check"}
    elif verify_age.is_encrypted_folder(directory):
        raise CliError(
            f"{directory} was sent encrypted to age recipients ({MANIFEST_AGE}); pass "
            "--identity KEYFILE (your age identity file) to check it, or check the .age files "
            "alone with `sha256sum -c SHA256SUMS`."
        )
    else:
        results = verify_dir(directory, show_progress=not args.json)
        outcome = check_signature(directory, key) if key is not None else None
    if key is not None:
        assert outcome is not None
        results.append(outcome)
        signature.update(ok=outcome["ok"], key_id=key.key_id, key_source=key.source)
    else:
        signature["reason"] = why_not
        print(
            f"resguardo: the manifest's signature was NOT checked ({why_not.rstrip('.')}); "
            "pass --public-key FILE with the key from `resguardo keys show` to check it.",
            file=sys.stderr,
        )
    bad = [r for r in results if not r["ok"]]
    if args.json:
        print(json.dumps({"ok": not bad, "signature": signature, "files": results}, indent=2))
    else:
        for r in results:
            print(
                f"{'OK ' if r['ok'] else 'BAD'}  {r['name']}"
                + (f"  ({r['reason']})" if r["reason"] else "")
            )
        if bad:
            print(f"{len(bad)} file(s) failed verification.")
        elif key is None:
            print("All files verified; the signature was not checked.")
        else:
            print(f"All files verified; manifest signed by key {key.key_id}.")
    return 1 if bad else 0


def register(sub: Any) -> None:
    parser = sub.add_parser("verify", help="check a downloaded recording's files and hashes")
    parser.add_argument("directory", help="the downloaded recording folder")
    parser.add_argument(
        "--public-key",
        metavar="FILE",
        help="the operator's Ed25519 public key (PEM, from `resguardo keys show`); "
        "default: ask the API",
    )
    parser.add_argument(
        "--identity",
        metavar="KEYFILE",
        help="your age identity file (from age-keygen), for a recording sent to an encrypt_to "
        "destination: every .age file is decrypted and checked against the manifest",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=_run)
