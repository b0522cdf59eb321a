"""`resguardo verify`: a downloaded recording passes; one flipped byte in a file or in the signed
manifest is named and fails."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.transcoder.output import build_output
from services.transcoder.plan import plan_files
from services.transcoder.state import fold
from shared import signing
from shared.integrity import sha256sums

from .transcoder.capture_factory import ParticipantSpec, SessionSpec, make_capture
from .transcoder.sealed import opened

KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()


def _recording(folder: Path, key: Ed25519PrivateKey = KEY) -> Path:
    folder.mkdir()
    files = {"alice.webm": b"A" * 300_000, "bob.webm": b"B" * 1000}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    shas = {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    (folder / "SHA256SUMS").write_text(sha256sums(shas.items()))
    manifest = {
        "recording_id": "rec_0123456789abcdef01234567",
        "files": [{"name": n, "sha256": s, "size": len(files[n])} for n, s in shas.items()],
        "signing_key_id": signing.key_id(key.public_key()),
    }
    raw = json.dumps(manifest).encode()
    (folder / "manifest.json").write_bytes(raw)
    (folder / "manifest.json.sig").write_text(signing.sign(key, raw))
    return folder


def _public_key(tmp: Path, key: Ed25519PrivateKey = KEY) -> Path:
    path = tmp / f"key-{signing.key_id(key.public_key())}.pem"
    path.write_text(signing.public_pem(key))
    return path


def _verify(folder: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    # No API anywhere: RESGUARDO_DATA_DIR points at an empty folder and no URL is set.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESGUARDO_")}
    env["RESGUARDO_DATA_DIR"] = str(folder.parent / "no-such-data-dir")
    return subprocess.run(
        [sys.executable, "-m", "resguardo", "verify", str(folder), "--json", *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def _bad(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    report = json.loads(result.stdout)
    return {f["name"]: f["reason"] for f in report["files"] if not f["ok"]}


def test_intact_recording_verifies_and_matches_coreutils(tmp_path: Path) -> None:
    folder = _recording(tmp_path / "rec")
    result = _verify(folder, "--public-key", str(_public_key(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["signature"]["checked"] is True and report["signature"]["ok"] is True
    assert report["signature"]["key_id"] == signing.key_id(KEY.public_key())
    coreutils = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=folder, capture_output=True, text=True
    )
    assert coreutils.returncode == 0, coreutils.stdout


def test_one_flipped_byte_is_named(tmp_path: Path) -> None:
    folder = _recording(tmp_path / "rec")
    data = bytearray((folder / "alice.webm").read_bytes())
    data[123_456] ^= 0x01
    (folder / "alice.webm").write_bytes(bytes(data))
    result = _verify(folder, "--public-key", str(_public_key(tmp_path)))
    assert result.returncode == 1
    assert list(_bad(result)) == ["alice.webm"]


def test_tampered_manifest_hash_is_detected(tmp_path: Path) -> None:
    folder = _recording(tmp_path / "rec")
    text = (folder / "manifest.json").read_text()
    sha_bob = hashlib.sha256(b"B" * 1000).hexdigest()
    flipped = sha_bob[:10] + ("0" if sha_bob[10] != "0" else "1") + sha_bob[11:]
    (folder / "manifest.json").write_text(text.replace(sha_bob, flipped))
    result = _verify(folder, "--public-key", str(_public_key(tmp_path)))
    assert result.returncode == 1
    bad = _bad(result)
    assert sorted(bad) == ["bob.webm", "manifest.json"]
    assert "signature does not match" in bad["manifest.json"]


def test_one_byte_of_the_manifest_breaks_the_signature_alone(tmp_path: Path) -> None:
    folder = _recording(tmp_path / "rec")
    raw = bytearray((folder / "manifest.json").read_bytes())
    at = raw.index(b"rec_0123") + 4
    raw[at] ^= 0x01  # '0' -> '1': still valid JSON, every file still matches its hash
    (folder / "manifest.json").write_bytes(bytes(raw))
    result = _verify(folder, "--public-key", str(_public_key(tmp_path)))
    assert result.returncode == 1
    assert _bad(result) == {
        "manifest.json": "signature does not match: manifest.json was changed or signed by "
        "another key"
    }


def test_another_operators_key_is_named(tmp_path: Path) -> None:
    folder = _recording(tmp_path / "rec")
    result = _verify(folder, "--public-key", str(_public_key(tmp_path, OTHER_KEY)))
    assert result.returncode == 1
    reason = _bad(result)["manifest.json"]
    assert signing.key_id(KEY.public_key()) in reason
    assert signing.key_id(OTHER_KEY.public_key()) in reason


def test_missing_signature_fails(tmp_path: Path) -> None:
    folder = _recording(tmp_path / "rec")
    (folder / "manifest.json.sig").unlink()
    result = _verify(folder, "--public-key", str(_public_key(tmp_path)))
    assert result.returncode == 1
    assert list(_bad(result)) == ["manifest.json.sig"]


def test_without_a_key_files_are_checked_and_the_signature_is_said_unchecked(
    tmp_path: Path,
) -> None:
    folder = _recording(tmp_path / "rec")
    result = _verify(folder)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["signature"]["checked"] is False
    assert "Cannot find the API" in report["signature"]["reason"]
    assert "signature was NOT checked" in result.stderr and "--public-key" in result.stderr
    # Files are still checked on that path.
    data = bytearray((folder / "bob.webm").read_bytes())
    data[0] ^= 0x01
    (folder / "bob.webm").write_bytes(bytes(data))
    assert list(_bad(_verify(folder))) == ["bob.webm"]


def test_a_key_file_that_is_no_key_is_one_sentence(tmp_path: Path) -> None:
    folder = _recording(tmp_path / "rec")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key\n")
    result = _verify(folder, "--public-key", str(junk))
    assert result.returncode == 1
    assert result.stderr.startswith("resguardo:") and "Ed25519 public key" in result.stderr
    assert "Traceback" not in result.stderr


def test_transcoder_output_verifies_and_one_byte_anywhere_is_caught(tmp_path: Path) -> None:
    c = make_capture(tmp_path / "backup", [ParticipantSpec("alice", (SessionSpec(0, 2),))])
    state = fold(c.events)
    # The backup holds the output encrypted; verify checks what the customer gets: the
    # decrypted copy under the real names.
    sealed = opened(
        c, build_output(c.rec_dir, state, plan_files(state), key=c.key, signing_key=KEY)
    )
    key = str(_public_key(tmp_path))
    result = _verify(sealed.output, "--public-key", key)
    assert result.returncode == 0, result.stdout + result.stderr
    # One byte of one media file, and one byte of the manifest.
    media = sealed.output / "alice.webm"
    data = bytearray(media.read_bytes())
    data[len(data) // 2] ^= 0x01
    media.write_bytes(bytes(data))
    manifest = sealed.output / "manifest.json"
    raw = bytearray(manifest.read_bytes())
    at = raw.index(b'"display_name": "Alice"') + len(b'"display_name": "')
    raw[at] ^= 0x20  # "Alice" -> "alice"
    manifest.write_bytes(bytes(raw))
    result = _verify(sealed.output, "--public-key", key)
    assert result.returncode == 1
    bad = _bad(result)
    assert sorted(bad) == ["alice.webm", "manifest.json"]
    assert bad["alice.webm"] == "SHA-256 does not match SHA256SUMS"
    assert "signature does not match" in bad["manifest.json"]


def test_missing_sums_file_is_one_clear_sentence(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "resguardo", "verify", str(tmp_path / "empty")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith("resguardo:") and "SHA256SUMS" in result.stderr
    assert "Traceback" not in result.stderr
