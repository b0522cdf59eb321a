"""`resguardo verify`: a downloaded recording passes; one flipped byte is named and fails."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from shared.integrity import sha256sums


def _recording(folder: Path) -> Path:
    folder.mkdir()
    files = {"alice.webm": b"A" * 300_000, "bob.webm": b"B" * 1000}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    shas = {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    (folder / "SHA256SUMS").write_text(sha256sums(shas.items()))
    manifest = {"files": [{"name": n, "sha256": s, "size": len(files[n])} for n, s in shas.items()]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _verify(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resguardo", "verify", str(folder), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_intact_recording_verifies_and_matches_coreutils(tmp_path: Path) -> None:
    folder = _recording(tmp_path / "rec")
    result = _verify(folder)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True
    coreutils = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=folder, capture_output=True, text=True
    )
    assert coreutils.returncode == 0, coreutils.stdout


def test_one_flipped_byte_is_named(tmp_path: Path) -> None:
    folder = _recording(tmp_path / "rec")
    data = bytearray((folder / "alice.webm").read_bytes())
    data[123_456] ^= 0x01
    (folder / "alice.webm").write_bytes(bytes(data))
    result = _verify(folder)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    bad = [f["name"] for f in report["files"] if not f["ok"]]
    assert bad == ["alice.webm"]


def test_tampered_manifest_is_detected(tmp_path: Path) -> None:
    folder = _recording(tmp_path / "rec")
    text = (folder / "manifest.json").read_text()
    sha_bob = hashlib.sha256(b"B" * 1000).hexdigest()
    flipped = sha_bob[:10] + ("0" if sha_bob[10] != "0" else "1") + sha_bob[11:]
    (folder / "manifest.json").write_text(text.replace(sha_bob, flipped))
    result = _verify(folder)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert [f["name"] for f in report["files"] if not f["ok"]] == ["bob.webm"]


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
