"""`resguardo verify --identity`: a folder as an encrypt_to destination receives it (made here
with the uploader's own age code) passes; a changed ciphertext, a ciphertext swapped for another
valid one, the wrong identity and a broken key file each fail, named."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyrage
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pyrage import x25519

from services.uploader import agefiles
from shared import signing
from shared.events.transcodes import SealedFile
from shared.integrity import sha256sums

KEY = Ed25519PrivateKey.generate()
FILES = {"alice.webm": os.urandom(200_000), "bob.webm": b"B" * 1000}


def _sealed(name: str, data: bytes, role: Any) -> SealedFile:
    return SealedFile(
        name=name, role=role, size=len(data), sha256=hashlib.sha256(data).hexdigest(), crc32=0
    )


def _identity(tmp: Path, name: str = "me") -> tuple[Path, str]:
    ident = x25519.Identity.generate()
    path = tmp / f"{name}.agekey"
    path.write_text(f"# created by the test\n{ident}\n")
    return path, str(ident.to_public())


def _folder(tmp: Path, recipient: str) -> Path:
    """What an encrypt_to destination receives, as agefiles makes it."""
    out = tmp / "download"
    out.mkdir()
    staging = agefiles.Staging(tmp, [recipient])
    sums, encrypted = [], {}

    async def make() -> None:
        for name, data in FILES.items():
            path, age = await staging.encrypt_bytes(data, _sealed(name, data, "media"))
            path.rename(out / age.name)
            encrypted[name] = age
            sums.append((age.name, age.sha256))
        manifest = {
            "files": [
                {"name": n, "sha256": hashlib.sha256(d).hexdigest(), "size": len(d)}
                for n, d in FILES.items()
            ],
            "signing_key_id": signing.key_id(KEY.public_key()),
        }
        original = json.dumps(manifest).encode()
        sig = signing.sign(KEY, original).encode()
        text = agefiles.age_manifest(original, encrypted, [recipient], KEY, sig)
        for name, data in (("manifest.json", text), ("manifest.json.sig", signing.sign(KEY, text))):
            raw = data if isinstance(data, bytes) else data.encode()
            path, age = await staging.encrypt_bytes(raw, _sealed(name, raw, "manifest"))
            path.rename(out / age.name)
            sums.append((age.name, age.sha256))

    asyncio.run(make())
    (out / "SHA256SUMS").write_text(sha256sums(sums))
    return out


def _verify(folder: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESGUARDO_")}
    env["RESGUARDO_DATA_DIR"] = str(folder.parent / "no-such-data-dir")
    pub = folder.parent / "signing.pem"
    pub.write_text(signing.public_pem(KEY))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "resguardo",
            "verify",
            str(folder),
            "--public-key",
            str(pub),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def _bad(out: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert out.returncode == 1, out.stdout + out.stderr
    return {r["name"]: r["reason"] for r in json.loads(out.stdout)["files"] if not r["ok"]}


def test_good_folder_passes_and_both_layers_are_reported(tmp_path: Path) -> None:
    key, recipient = _identity(tmp_path)
    folder = _folder(tmp_path, recipient)
    out = _verify(folder, "--identity", str(key), "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] and report["signature"]["checked"]
    alice = next(r for r in report["files"] if r["name"] == "alice.webm.age")
    assert alice["plaintext_sha256"] == hashlib.sha256(FILES["alice.webm"]).hexdigest()
    assert alice["sha256"] == hashlib.sha256((folder / "alice.webm.age").read_bytes()).hexdigest()
    assert "AGE-SECRET-KEY" not in out.stdout + out.stderr
    text = _verify(folder, "--identity", str(key))
    assert text.returncode == 0 and "OK   alice.webm.age" in text.stdout


def test_changed_ciphertext_fails_even_with_sums_fixed(tmp_path: Path) -> None:
    key, recipient = _identity(tmp_path)
    folder = _folder(tmp_path, recipient)
    target = folder / "alice.webm.age"
    data = bytearray(target.read_bytes())
    data[-100] ^= 0x40
    target.write_bytes(bytes(data))
    assert "SHA256SUMS" in _bad(_verify(folder, "--identity", str(key), "--json"))[target.name]
    # Whoever changed it also rewrote SHA256SUMS: the manifest and age's own tags still catch it.
    sums = (folder / "SHA256SUMS").read_text().splitlines()
    new = hashlib.sha256(bytes(data)).hexdigest()
    fixed = [f"{new}  {target.name}" if line.endswith(target.name) else line for line in sums]
    (folder / "SHA256SUMS").write_text("\n".join(fixed) + "\n")
    assert "manifest.json" in _bad(_verify(folder, "--identity", str(key), "--json"))[target.name]


def test_a_ciphertext_of_other_plaintext_fails(tmp_path: Path) -> None:
    """Anyone can encrypt to a public key: a valid .age of other bytes, with every hash beside it
    rewritten, still fails on the signed plaintext hash."""
    key, recipient = _identity(tmp_path)
    folder = _folder(tmp_path, recipient)
    (folder / "bob.webm.age").write_bytes(
        pyrage.encrypt(b"X" * 1000, [x25519.Recipient.from_str(recipient)])
    )
    bad = _bad(_verify(folder, "--identity", str(key), "--json"))
    assert set(bad) == {"bob.webm.age"}


def test_wrong_identity_and_broken_key_file(tmp_path: Path) -> None:
    _, recipient = _identity(tmp_path)
    other, _ = _identity(tmp_path, "other")
    folder = _folder(tmp_path, recipient)
    bad = _bad(_verify(folder, "--identity", str(other), "--json"))
    assert "cannot be decrypted" in bad["manifest.json.age"]
    broken = tmp_path / "broken.agekey"
    broken.write_text("AGE-SECRET-KEY-1NOTAKEYATALL\n")
    out = _verify(folder, "--identity", str(broken))
    assert out.returncode != 0 and "line 1 is not an age X25519 identity" in out.stderr
    assert "NOTAKEYATALL" not in out.stderr + out.stdout
    plain = _verify(folder)  # no identity: told what to pass, not a wall of BAD lines
    assert plain.returncode != 0 and "--identity KEYFILE" in plain.stderr
