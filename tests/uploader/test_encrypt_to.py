"""``encrypt_to`` destinations, end to end: a real vault, NATS, uploader process and storage (the
``file`` provider and moto's S3 server); what arrives is decrypted with the reference ``age``
command-line tool (scripts/test-deps.d/age.sh), checked against the manifest, and passed through
``resguardo verify --identity``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from nats.js import JetStreamContext

from shared import signing
from shared.embedded import NatsServer
from shared.events import uploads as up
from shared.ids import new_tenant_id
from shared.integrity import sha256sums
from tests.credentials.helpers import VaultClient
from tests.servers import MotoS3, ServiceProcess

from .support import (
    Backup,
    new_bucket,
    publish_sealed,
    s3_destination,
    sealed_file,
    start_uploader,
    wait_event,
    write_backup,
)
from .test_uploader import make_destination

MIB = 1024 * 1024
VERIFY = (sys.executable, "-m", "resguardo", "verify", "--json")
SIGNING = Ed25519PrivateKey.generate()


def age_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"the reference `{name}` tool is not installed; run "
            "`bash scripts/test-deps.d/age.sh` (make test-deps)"
        )
    return path


def new_identity(tmp: Path, name: str = "customer") -> tuple[Path, str]:
    """An identity file made by age-keygen, and its public recipient (age1...)."""
    key = tmp / f"{name}.agekey"
    subprocess.run([age_tool("age-keygen"), "-o", str(key)], check=True, capture_output=True)
    public = subprocess.run(
        [age_tool("age-keygen"), "-y", str(key)], check=True, capture_output=True, text=True
    ).stdout.strip()
    return key, public


def age_decrypt(path: Path, identity: Path) -> bytes:
    out = subprocess.run(
        [age_tool("age"), "--decrypt", "-i", str(identity), str(path)],
        capture_output=True,
        check=True,
    )
    return out.stdout


def signed_backup(root: Path, tenant: str, sizes: dict[str, int]) -> Backup:
    """A backup whose manifest.json is a real one (file entries with plaintext SHA-256 and
    size) signed with SIGNING, as the transcoder writes it."""
    backup = write_backup(root, tenant, sizes)
    media = [f for f in backup.files if f.role == "media"]
    manifest = {
        "format": "resguardo.recording",
        "recording_id": backup.recording_id,
        "participants": [{"participant_id": "alice", "display_name": "Alice Example"}],
        "files": [{"name": f.name, "sha256": f.sha256, "size": f.size} for f in media],
        "checksums": "SHA256SUMS",
        "signature": "manifest.json.sig",
        "signing_key_id": signing.key_id(SIGNING.public_key()),
    }
    text = (json.dumps(manifest, indent=2) + "\n").encode()
    (backup.output / "manifest.json").write_bytes(text)
    (backup.output / "manifest.json.sig").write_text(signing.sign(SIGNING, text))
    (backup.output / "SHA256SUMS").write_text(sha256sums((f.name, f.sha256) for f in media))
    backup.files = [
        *media,
        sealed_file(backup.output / "SHA256SUMS", "checksums", "text/plain"),
        sealed_file(backup.output / "manifest.json", "manifest", "application/json"),
        sealed_file(backup.output / "manifest.json.sig", "signature", "text/plain"),
    ]
    return backup


@pytest.fixture
def signing_files(tmp_path: Path) -> tuple[Path, Path]:
    private = tmp_path / "signing.key"
    private.write_bytes(SIGNING.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    private.chmod(0o600)
    public = tmp_path / "signing.pub.pem"
    public.write_text(signing.public_pem(SIGNING))
    return private, public


@pytest.fixture
def age_uploader(
    tmp_path: Path, nats_server: NatsServer, backup_root: Path, signing_files: tuple[Path, Path]
) -> Iterator[ServiceProcess]:
    proc = start_uploader(tmp_path, nats_server.url, backup_root, signing_key_file=signing_files[0])
    yield proc
    proc.stop()


def verify(folder: Path, identity: Path, public: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESGUARDO_")}
    return subprocess.run(
        [*VERIFY, str(folder), "--identity", str(identity), "--public-key", str(public)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def check_folder(
    folder: Path, backup: Backup, sent: dict[str, bytes], identity: Path, recipients: list[str]
) -> None:
    """What a customer downloads: only .age files and a clear SHA256SUMS of them, which
    ``sha256sum -c`` accepts; every .age decrypts (reference tool) to the sealed plaintext."""
    media = {f.name: f for f in backup.files if f.role == "media"}
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(
        [*(n + ".age" for n in media), "SHA256SUMS", "manifest.json.age", "manifest.json.sig.age"]
    )
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=folder, capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    manifest = json.loads(age_decrypt(folder / "manifest.json.age", identity))
    assert manifest["encryption"]["recipients"] == recipients
    assert manifest["participants"][0]["display_name"] == "Alice Example"
    sig = age_decrypt(folder / "manifest.json.sig.age", identity).decode()
    raw = age_decrypt(folder / "manifest.json.age", identity)
    assert signing.verify(signing.public_pem(SIGNING), raw, sig)  # re-signed, same key
    for entry in manifest["files"]:
        enc = entry["encrypted"]
        age_bytes = (folder / enc["name"]).read_bytes()
        assert age_bytes.startswith(b"age-encryption.org/v1\n")
        assert enc["sha256"] == hashlib.sha256(age_bytes).hexdigest()
        assert enc["size"] == len(age_bytes)
        plain = age_decrypt(folder / enc["name"], identity)
        assert plain == sent[entry["name"]]
        assert entry["sha256"] == hashlib.sha256(plain).hexdigest() == media[entry["name"]].sha256
        assert entry["size"] == len(plain)
        assert plain[:4096] not in age_bytes  # random test data: no clear copy anywhere


async def test_file_destination_gets_age_files_the_customer_alone_opens(
    js: JetStreamContext,
    vault: VaultClient,
    age_uploader: ServiceProcess,
    backup_root: Path,
    tmp_path: Path,
    signing_files: tuple[Path, Path],
) -> None:
    identity, public = new_identity(tmp_path)
    second_identity, second = new_identity(tmp_path, "second")
    dest_root = tmp_path / "delivered"
    tenant = new_tenant_id()
    dest = await make_destination(
        vault,
        tenant,
        "file",
        {
            "path": str(dest_root),
            "encrypt_to": [public, second],
            "key_template": "{recording_id}/{file}",
        },
    )
    backup = signed_backup(backup_root, tenant, {"alice.webm": 3 * MIB + 17, "bob.webm": 1000})
    sent = {f.name: backup.content(f.name) for f in backup.files}
    await publish_sealed(js, backup, dest)
    done = await wait_event(js, backup.recording_id, "uploaded", age_uploader)
    assert isinstance(done, up.RecordingUploaded)
    folder = dest_root / backup.recording_id
    for f in done.files:  # the events describe the bytes actually stored
        data = (folder / f.name).read_bytes()
        assert f.sha256 == hashlib.sha256(data).hexdigest() and f.size == len(data)
    check_folder(folder, backup, sent, identity, [public, second])
    assert age_decrypt(folder / "bob.webm.age", second_identity) == sent["bob.webm"]
    log = age_uploader.log_path.read_text()
    assert "AGE-SECRET-KEY" not in log and "Alice Example" not in log
    assert not any((tmp_path / "uploader-data" / "upload-staging").iterdir())  # cleaned up

    ok = verify(folder, identity, signing_files[1])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    report = json.loads(ok.stdout)
    assert report["ok"] and report["signature"]["ok"]
    assert {r["name"] for r in report["files"]} >= {"alice.webm.age", "bob.webm.age"}
    assert "AGE-SECRET-KEY" not in ok.stdout + ok.stderr

    # One flipped byte in a ciphertext: named, and the run fails.
    target = folder / "alice.webm.age"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    bad = verify(folder, identity, signing_files[1])
    assert bad.returncode == 1
    failed = {r["name"]: r["reason"] for r in json.loads(bad.stdout)["files"] if not r["ok"]}
    assert list(failed) == ["alice.webm.age"]
    assert "SHA256SUMS" in failed["alice.webm.age"]


async def test_s3_destination_gets_age_files_checked_in_transit(
    js: JetStreamContext,
    vault: VaultClient,
    age_uploader: ServiceProcess,
    s3_server: MotoS3,
    backup_root: Path,
    tmp_path: Path,
) -> None:
    identity, public = new_identity(tmp_path)
    s3 = s3_server.client()
    bucket = new_bucket()
    s3.create_bucket(Bucket=bucket)
    tenant = new_tenant_id()
    config = s3_destination(s3_server.url, bucket, encrypt_to=[public])
    dest = await make_destination(vault, tenant, "s3", config)
    # Bigger than a part: the .age file goes multipart, each part's CRC-32 over the ciphertext.
    backup = signed_backup(backup_root, tenant, {"alice.webm": 6 * MIB + 5, "bob.webm": 4096})
    sent = {f.name: backup.content(f.name) for f in backup.files}
    await publish_sealed(js, backup, dest)
    done = await wait_event(js, backup.recording_id, "uploaded", age_uploader, timeout=120)
    assert isinstance(done, up.RecordingUploaded)
    folder = tmp_path / "download"
    folder.mkdir()
    for f in done.files:
        body = s3.get_object(Bucket=bucket, Key=backup.key(f.name))["Body"].read()
        assert f.sha256 == hashlib.sha256(body).hexdigest()
        (folder / f.name).write_bytes(body)
    by_name = {f.name: f for f in done.files}
    assert by_name["alice.webm.age"].checksum.endswith("-2")  # two parts of ciphertext
    check_folder(folder, backup, sent, identity, [public])
    assert not backup.folder.exists()  # confirmed, then purged as usual


async def test_a_bad_recipient_is_refused_naming_encrypt_to(
    vault: VaultClient, tmp_path: Path
) -> None:
    _, public = new_identity(tmp_path)
    tenant = new_tenant_id()
    for bad in (["age1notakey"], [public[:-1] + "x"], "age1" + public[4:], [], [public, public]):
        reply = await vault.create(tenant, "d", "file", {"path": "/tmp/x", "encrypt_to": bad})
        assert reply.problem is not None, bad
        assert 400 <= reply.problem.status < 500
        assert reply.problem.field == "config.encrypt_to"
        assert "encrypt_to" in reply.problem.message
    ssh = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    reply = await vault.create(tenant, "d", "file", {"path": "/tmp/x", "encrypt_to": [ssh]})
    assert reply.problem is not None and reply.problem.field == "config.encrypt_to"
    ok = await vault.create(tenant, "d", "file", {"path": "/tmp/x", "encrypt_to": [public]})
    assert ok.destination is not None and ok.destination.config["encrypt_to"] == [public]
