"""Real storage servers for the uploader's contract tests, each behind a ``Proxy``.

Every store starts *unprepared* (no bucket / container; the FTP user may only read): a test calls
``prepare()`` first, unless it wants the permanent failure that this is. Each can be stopped and
started again on the same port with its data kept (``stop``/``restart``), and tells how many bytes
reached it (``received``; through the proxy for HTTP, through the server's file layer for FTP).

- ``s3``: moto's threaded server (in this process: a restart keeps the buckets).
- ``gcs``: gcp-storage-emulator (disk mode), which keeps resumable sessions queryable (the bundled
  fake-gcs-server finishes an upload when asked for its status, so it cannot show a resume).
- ``azure``: Azurite's blob server (npm, installed by scripts/test-deps.d/storage.sh).
- ``ftp`` / ``ftps``: pyftpdlib in a thread, plain or explicit TLS, optionally with a ``HASH``
  command (SHA-256) added, as pyftpdlib has none.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

from shared.embedded import free_port, python_env, wait_for_port
from shared.tls import ensure_self_signed

from .proxy import Proxy

REPO = Path(__file__).resolve().parents[2]
AZURITE = REPO / "build" / "node" / "node_modules" / ".bin" / "azurite-blob"
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's documented development key (public, not a secret).
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
FTP_USER = "uploader"
FTP_PASSWORD = "CANARY-ftp-password-8c1d"  # must never show in a log or an event
S3_SECRET = "CANARY-s3-secret-3f9a"
MIB = 1024 * 1024


def new_name(prefix: str = "rg") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class Store:
    """What every contract test needs from a storage server."""

    name = ""
    provider = ""
    uri_scheme = ""
    checksum_algorithm = ""
    corruption_modes: tuple[str, ...] = ()

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.proxy: Proxy

    def config(self, **extra: Any) -> dict[str, Any]:
        raise NotImplementedError

    def uploader_env(self) -> dict[str, str]:
        return {}

    def secrets(self) -> list[str]:
        return []

    def prepare(self) -> None:
        raise NotImplementedError

    def keys(self) -> list[str]:
        raise NotImplementedError

    def read(self, key: str) -> bytes:
        raise NotImplementedError

    def metadata_sha256(self, key: str) -> str | None:
        return None

    def received(self) -> int:
        return self.proxy.sent

    def throttle(self, rate: float | None) -> None:
        self.proxy.rate = rate

    def stop(self) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.proxy.stop()


# -- S3 (moto) ---------------------------------------------------------------------------
class S3Store(Store):
    name = provider = "s3"
    uri_scheme = "s3"
    checksum_algorithm = "CRC32"
    corruption_modes = ("readback",)  # moto stores whatever checksum it is sent

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        from moto.server import ThreadedMotoServer

        self._server_cls = ThreadedMotoServer
        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.bucket = new_name()
        self.proxy = Proxy(self.port).start()
        self.s3 = self._client()

    def _client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self.port}",
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def config(self, **extra: Any) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "endpoint_url": self.proxy.url,
            "region": "us-east-1",
            "path_style": True,
            "access_key_id": "AKIACONTRACT00000001",
            "secret_access_key": S3_SECRET,
            **extra,
        }

    def secrets(self) -> list[str]:
        return [S3_SECRET]

    def prepare(self) -> None:
        self.s3.create_bucket(Bucket=self.bucket)

    def keys(self) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket).get("Contents") or []
        return sorted(o["Key"] for o in listed)

    def read(self, key: str) -> bytes:
        return bytes(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def metadata_sha256(self, key: str) -> str | None:
        meta: dict[str, str] = self.s3.head_object(Bucket=self.bucket, Key=key)["Metadata"]
        return meta.get("sha256")

    def stop(self) -> None:
        self.server.stop()

    def restart(self) -> None:
        self.server = self._server_cls(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def close(self) -> None:
        super().close()
        self.server.stop()


# -- GCS (gcp-storage-emulator) -----------------------------------------------------------
class GCSStore(Store):
    name = provider = "gcs"
    uri_scheme = "gs"
    checksum_algorithm = "CRC32C"
    corruption_modes = ("checksum", "readback")

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.port = free_port()
        self.data = tmp / "gcs-data"
        self.data.mkdir()
        self.proc: subprocess.Popen[bytes] | None = None
        self._start()
        self.bucket = new_name()
        self.proxy = Proxy(self.port).start()

    @property
    def direct(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _start(self) -> None:
        env = {**python_env(), "STORAGE_BASE": str(self.data), "STORAGE_DIR": "store"}
        log = (self.tmp / "gcs.log").open("ab")
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "gcp_storage_emulator", "start"),
                *("--host", "127.0.0.1", "--port", str(self.port), "-q"),
            ],
            stdout=log,
            stderr=log,
            env=env,
        )
        log.close()
        wait_for_port("127.0.0.1", self.port, timeout=30)

    def _request(self, method: str, path: str, body: Any = None) -> bytes:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.direct + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return bytes(resp.read())

    def config(self, **extra: Any) -> dict[str, Any]:
        return {"bucket": self.bucket, "endpoint": self.proxy.url, **extra}

    def prepare(self) -> None:
        self._request("POST", "/storage/v1/b", {"name": self.bucket})

    def keys(self) -> list[str]:
        listed = json.loads(self._request("GET", f"/storage/v1/b/{self.bucket}/o"))
        return sorted(i["name"] for i in listed.get("items", []))

    def read(self, key: str) -> bytes:
        return self._request(
            "GET", f"/download/storage/v1/b/{self.bucket}/o/{quote(key, '')}?alt=media"
        )

    def metadata_sha256(self, key: str) -> str | None:
        meta = json.loads(self._request("GET", f"/storage/v1/b/{self.bucket}/o/{quote(key, '')}"))
        return (meta.get("metadata") or {}).get("sha256")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        self._start()

    def close(self) -> None:
        super().close()
        self.stop()


# -- Azure (Azurite) ----------------------------------------------------------------------
class AzureStore(Store):
    name = provider = "azure"
    uri_scheme = "http"
    checksum_algorithm = "MD5"
    corruption_modes = ("checksum",)

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        if not AZURITE.exists():
            raise RuntimeError(
                "Azurite is not installed; run `bash scripts/test-deps.d/storage.sh` "
                "(make test-deps)"
            )
        self.data = tmp / "azurite"
        self.data.mkdir()
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self._start()
        self.container = new_name()
        self.proxy = Proxy(self.port).start()
        self.service = self._client()

    def _start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *(str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(self.port)),
                *("--location", str(self.data), "--skipApiVersionCheck", "--disableTelemetry"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        for line in self.proc.stdout:
            m = re.search(r"listens on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
            if time.monotonic() > deadline:
                break
        else:
            raise RuntimeError("Azurite did not start")
        # Keep reading its output so it never blocks on a full pipe.
        threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()

    @staticmethod
    def _drain(proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for _ in proc.stdout:
            pass

    def _connection_string(self, port: int) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
        )

    def _client(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(
            self._connection_string(self.port), retry_total=0
        )

    def config(self, **extra: Any) -> dict[str, Any]:
        return {
            "container": self.container,
            "connection_string": self._connection_string(self.proxy.port),
            **extra,
        }

    def secrets(self) -> list[str]:
        return [AZURITE_KEY]

    def prepare(self) -> None:
        self.service.create_container(self.container)

    def keys(self) -> list[str]:
        box = self.service.get_container_client(self.container)
        return sorted(b.name for b in box.list_blobs())

    def read(self, key: str) -> bytes:
        blob = self.service.get_blob_client(self.container, key)
        return bytes(blob.download_blob().readall())

    def metadata_sha256(self, key: str) -> str | None:
        blob = self.service.get_blob_client(self.container, key)
        meta: dict[str, str] = blob.get_blob_properties().metadata
        return meta.get("sha256")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def restart(self) -> None:
        self._start()

    def close(self) -> None:
        super().close()
        self.stop()


# -- FTP / FTPS (pyftpdlib) ---------------------------------------------------------------
class _Counter:
    def __init__(self) -> None:
        self.hashes = 0  # HASH commands answered
        self.bytes = 0
        self.rate: float | None = None
        self.mkdir_races = 0  # the next MKDs find their folder just made by another client


def _handler_class(tls: bool, hash_cmd: bool, counter: _Counter, cert: Path | None) -> type:
    from pyftpdlib.filesystems import AbstractedFS
    from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler

    class CountingFile:
        """The server's file: counts what it is given and can write slowly (``rate``)."""

        def __init__(self, fh: Any) -> None:
            self._fh = fh

        def write(self, data: bytes) -> int:
            counter.bytes += len(data)
            if counter.rate:
                time.sleep(len(data) / counter.rate)
            return int(self._fh.write(data))

        def __getattr__(self, name: str) -> Any:
            return getattr(self._fh, name)

    class CountingFS(AbstractedFS):  # type: ignore[misc]
        def open(self, filename: str, mode: str) -> Any:
            fh = super().open(filename, mode)
            return CountingFile(fh) if "w" in mode or "a" in mode or "+" in mode else fh

    base: Any = TLS_FTPHandler if tls else FTPHandler

    class Handler(base):  # type: ignore[misc,valid-type]
        abstracted_fs = CountingFS
        proto_cmds = dict(base.proto_cmds)
        if hash_cmd:
            proto_cmds["HASH"] = {
                "perm": "r",
                "auth": True,
                "arg": True,
                "help": "Syntax: HASH <SP> file-name (SHA-256).",
            }

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if hash_cmd:
                feats: list[str] = getattr(self, "_extra_feats", [])
                self._extra_feats = [*feats, "HASH SHA-256*"]

        def ftp_MKD(self, path: str) -> Any:
            if counter.mkdir_races > 0:
                counter.mkdir_races -= 1
                os.mkdir(path)  # another upload got there between our look and our MKD
            return super().ftp_MKD(path)

        def ftp_HASH(self, path: str) -> None:
            sha = hashlib.sha256()
            size = 0
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    sha.update(chunk)
                    size += len(chunk)
            counter.hashes += 1
            line = self.fs.fs2ftp(path)
            self.respond(f"213 SHA-256 0-{max(size - 1, 0)} {sha.hexdigest()} {line}")

    if tls:
        assert cert is not None
        Handler.certfile = str(cert)
        Handler.keyfile = str(cert.with_name("key.pem"))
        Handler.tls_control_required = True
        Handler.tls_data_required = True
        Handler.ssl_context = None  # built from certfile, for this class alone
    return Handler


class FTPStore(Store):
    provider = "ftp"
    checksum_algorithm = "SHA256"

    def __init__(self, tmp: Path, *, tls: bool, hash_cmd: bool) -> None:
        super().__init__(tmp)
        self.tls = tls
        self.hash_cmd = hash_cmd
        self.name = ("ftps" if tls else "ftp") + ("+hash" if hash_cmd else "")
        self.uri_scheme = "ftps" if tls else "ftp"
        self.corruption_modes = ("checksum",) if hash_cmd else ("readback",)
        self.root = tmp / f"{self.name}-root"
        self.root.mkdir()
        self.cert: Path | None = None
        if tls:
            self.cert, _ = ensure_self_signed(tmp / "ftps-tls")
        self.counter = _Counter()
        from pyftpdlib.authorizers import DummyAuthorizer

        self.authorizer = DummyAuthorizer()
        self.authorizer.add_user(FTP_USER, FTP_PASSWORD, str(self.root), perm="elr")
        self.port = free_port()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._serving = False
        self._start()
        # Plain FTP: the proxy sees the control replies and routes data through itself too.
        # FTPS: control is encrypted, so only the control connection passes the proxy.
        self.proxy = Proxy(self.port, mode="raw" if tls else "ftp").start()

    def _start(self) -> None:
        from pyftpdlib.servers import FTPServer

        handler: Any = _handler_class(self.tls, self.hash_cmd, self.counter, self.cert)
        handler.authorizer = self.authorizer
        handler.passive_ports = None
        self._server = FTPServer(("127.0.0.1", self.port), handler)
        self._serving = True
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        server = self._server
        while self._serving:
            server.serve_forever(timeout=0.05, blocking=False)
        server.close_all()

    def config(self, **extra: Any) -> dict[str, Any]:
        return {
            "host": "127.0.0.1",
            "port": self.proxy.port,
            "username": FTP_USER,
            "password": FTP_PASSWORD,
            "directory": "/inbox",
            "tls": "explicit" if self.tls else "none",
            **extra,
        }

    def uploader_env(self) -> dict[str, str]:
        return {"SSL_CERT_FILE": str(self.cert)} if self.cert else {}

    def secrets(self) -> list[str]:
        return [FTP_PASSWORD]

    def prepare(self) -> None:
        self.authorizer.user_table[FTP_USER]["perm"] = "elradfmwMT"

    def keys(self) -> list[str]:
        base = self.root / "inbox"
        if not base.exists():
            return []
        return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())

    def read(self, key: str) -> bytes:
        return (self.root / "inbox" / key).read_bytes()

    def received(self) -> int:
        return self.counter.bytes

    def throttle(self, rate: float | None) -> None:
        self.counter.rate = rate

    def stop(self) -> None:
        self._serving = False
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def restart(self) -> None:
        self._start()

    def close(self) -> None:
        super().close()
        self.stop()


def make_store(kind: str, tmp: Path) -> Store:
    if kind == "s3":
        return S3Store(tmp)
    if kind == "gcs":
        return GCSStore(tmp)
    if kind == "azure":
        return AzureStore(tmp)
    if kind == "ftp":
        return FTPStore(tmp, tls=False, hash_cmd=False)
    if kind == "ftp+hash":
        return FTPStore(tmp, tls=False, hash_cmd=True)
    if kind == "ftps":
        return FTPStore(tmp, tls=True, hash_cmd=True)
    raise ValueError(kind)
