"""FTP / FTPS adapter (aioftp): temporary name, checked, then renamed into place.

- ``tls``: ``explicit`` (default; ``AUTH TLS`` upgrade, then ``PBSZ 0`` / ``PROT P`` so the data
  channel is encrypted too), ``implicit`` (TLS from the first byte, port 990 by default) or
  ``none``. Certificates are checked against the system store (``SSL_CERT_FILE`` is honoured).
- The file is sent as ``.<name>.<random>.part`` beside its final name, so a half-sent file never
  looks complete. Its size (``SIZE``) and content are checked while it still has that name; only
  then is it renamed (``RNFR``/``RNTO``) and the final name's size checked once more.
- Content proof (``verify``): the server's ``HASH`` command with SHA-256 where ``FEAT`` offers it
  (``checksum``, the default then); else the file is downloaded and re-hashed (``readback``, the
  default without ``HASH``). ``verify=checksum`` against a server without SHA-256 ``HASH`` is a
  configuration error: there would be no proof.
- Resume: the temporary name is kept in the recording's resume state; a later attempt asks its
  ``SIZE`` and continues with ``REST`` + ``STOR`` from there (servers without ``REST STREAM``
  start over).
- Reply codes: 4xx are transient (421, 425, 426, 450, 451, 452...), 5xx permanent (530 login,
  550 permission...), as RFC 959 defines them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import ssl
from pathlib import Path, PurePosixPath
from typing import Any

import aioftp

from shared.events.transcodes import SealedFile
from shared.events.uploads import RemoteFile

from .confirm import Readback, verify_mode
from .errors import PermanentUploadError, TransientUploadError, UploadError
from .layout import unsafe_segment
from .resume import ResumeSlot
from .source import Source, as_source

log = logging.getLogger(__name__)

STATE_KIND = "ftp-temp"
CHUNK = 1 << 20
HASH_RE = re.compile(r"^\s*SHA-256\s+\S+\s+([0-9a-fA-F]{64})\b")
TIMEOUT_S = 60.0


def _codes(exc: aioftp.StatusCodeError) -> list[str]:
    return [str(c) for c in exc.received_codes]


def classify(exc: BaseException, action: str, name: str) -> UploadError:
    """Our own sentence for a failure (server replies can echo paths or names: never reused)."""
    if isinstance(exc, UploadError):
        return exc
    if isinstance(exc, aioftp.StatusCodeError):
        code = (_codes(exc) or ["?"])[-1]
        what = f"the FTP server answered {code} to {action} {name}"
        if code.startswith("4"):
            return TransientUploadError(f"{what}; it will be retried")
        if code == "530":
            return PermanentUploadError(
                f"{what}: login refused; check the destination's username and password"
            )
        if code in ("550", "553", "532"):
            return PermanentUploadError(
                f"{what}: refused (permission or path); check the destination's directory and "
                "the account's rights"
            )
        return PermanentUploadError(f"{what}; check the destination")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PermanentUploadError(
            f"the FTP server's TLS certificate is not trusted (while trying to {action} {name}); "
            "install its CA or fix the destination's host"
        )
    if isinstance(exc, ConnectionError | OSError | asyncio.TimeoutError | ssl.SSLError | EOFError):
        return TransientUploadError(
            f"could not reach the FTP server to {action} {name} ({type(exc).__name__}); "
            "it will be retried"
        )
    if isinstance(exc, aioftp.AIOFTPException):
        return TransientUploadError(
            f"the FTP client failed to {action} {name} ({type(exc).__name__}); it will be retried"
        )
    return TransientUploadError(
        f"unexpected {type(exc).__name__} while trying to {action} {name}; it will be retried"
    )


def safe_directory(directory: str) -> PurePosixPath:
    """The destination's directory: absolute or relative to the login folder; no ``..``, no
    empty, control or look-alike segment (``unsafe_segment``)."""
    inner = directory.strip("/")
    if inner and any(unsafe_segment(segment) for segment in inner.split("/")):
        raise PermanentUploadError(
            "the FTP destination's directory has an unsafe segment; fix the destination"
        )
    if not inner:
        return PurePosixPath("/" if directory.startswith("/") else ".")
    return PurePosixPath(("/" if directory.startswith("/") else "") + inner)


class FTPBackend:
    def __init__(self, config: dict[str, Any], secret: dict[str, Any]) -> None:
        self.host = str(config["host"])
        self.tls = str(config.get("tls") or "explicit")
        if self.tls not in ("none", "explicit", "implicit"):
            raise PermanentUploadError(
                "the FTP destination's tls must be none, explicit or implicit; fix it"
            )
        self.port = int(config.get("port") or (990 if self.tls == "implicit" else 21))
        self.username = str(config.get("username") or "anonymous")
        self._password = str(secret.get("password") or "")
        self.directory = safe_directory(str(config.get("directory") or ""))
        self.verify = verify_mode(config)
        self._client: aioftp.Client | None = None
        self._features: set[str] = set()
        self._hash = False

    @property
    def scheme(self) -> str:
        return "ftp" if self.tls == "none" else "ftps"

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.quit(), 5)
            client.close()

    async def _connect(self, name: str) -> aioftp.Client:
        if self._client is not None:
            return self._client
        context = ssl.create_default_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        client = aioftp.Client(
            socket_timeout=TIMEOUT_S,
            connection_timeout=10,
            path_timeout=TIMEOUT_S,
            ssl=context if self.tls == "implicit" else None,
        )
        action = "log in for"
        try:
            await client.connect(self.host, self.port)
            if self.tls == "explicit":
                await client.upgrade_to_tls(context)
            await client.login(self.username, self._password)
            await client.command("TYPE I", "200")  # binary: SIZE and REST count real bytes
            _, lines = await client.command("FEAT", "211")
        except BaseException as exc:
            client.close()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise classify(exc, action, name) from None
        self._features = {line.strip().upper() for line in lines[1:]}
        self._hash = any(
            f.startswith("HASH") and "SHA-256" in f.replace("*", "") for f in self._features
        )
        if self._hash:
            # Make SHA-256 the current algorithm (a server may offer several).
            with contextlib.suppress(aioftp.StatusCodeError):
                await client.command("OPTS HASH SHA-256", "200")
        self._client = client
        return client

    def _mode(self) -> str:
        if self.verify == "checksum" and not self._hash:
            raise PermanentUploadError(
                "the FTP destination asks for verify=checksum but the server offers no SHA-256 "
                "HASH command; set verify to readback"
            )
        return self.verify or ("checksum" if self._hash else "readback")

    async def upload(
        self, source: Source | Path, key: str, sealed: SealedFile, slot: ResumeSlot
    ) -> RemoteFile:
        local = as_source(source, sealed)
        await local.check()
        name = sealed.name
        try:
            return await self._upload(local, key, sealed, slot)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError | PermanentUploadError):
                raise
            # A connection in an unknown state (mid-transfer): never reuse it.
            await self.close()
            if isinstance(exc, UploadError):
                raise
            raise classify(exc, "upload", name) from None

    async def _upload(
        self, local: Source, key: str, sealed: SealedFile, slot: ResumeSlot
    ) -> RemoteFile:
        name = sealed.name
        client = await self._connect(name)
        mode = self._mode()
        final = self.directory / key
        state = await slot.load(STATE_KIND)
        temp: PurePosixPath | None = None
        offset = 0
        if state and state.get("final") == str(final):
            temp = PurePosixPath(str(state["temp"]))
            offset = await self._size(client, temp, name, missing_ok=True) or 0
            if offset > sealed.size:
                offset = 0
            if offset and not any(f.startswith("REST") for f in self._features):
                offset = 0
        if temp is None:
            await self._make_folder(client, final.parent, name)
            temp = final.with_name(f".{final.name}.{secrets.token_hex(6)}.part")
            await slot.save(STATE_KIND, {"final": str(final), "temp": str(temp)})
        elif offset:
            log.info("resuming an FTP upload", extra={"file": name, "bytes_held": offset})
        await self._send(client, local, temp, offset, sealed)
        size = await self._size(client, temp, name)
        if size != sealed.size:
            await slot.clear()
            raise TransientUploadError(
                f"the FTP server holds {name} at another size than was sent; it will be sent again"
            )
        try:
            if mode == "checksum":
                await self._check_hash(client, temp, sealed)
            else:
                await self._readback(client, temp, sealed)
        except TransientUploadError:
            # A damaged copy is never resumed: the next attempt starts from its first byte.
            await slot.clear()
            with contextlib.suppress(Exception):
                await client.remove_file(temp)
            raise
        await self._rename(client, temp, final, name)
        if await self._size(client, final, name) != sealed.size:
            raise TransientUploadError(
                f"the FTP server reports {name} at another size after renaming it; "
                "it will be sent again"
            )
        await slot.clear()
        port = "" if self.port == (990 if self.tls == "implicit" else 21) else f":{self.port}"
        return RemoteFile(
            name=name,
            uri=f"{self.scheme}://{self.host}{port}/{str(final).lstrip('/')}",
            size=sealed.size,
            sha256=sealed.sha256,
            checksum_algorithm="SHA256",
            checksum=sealed.sha256,
        )

    async def delete(self, key: str) -> None:
        """``DELE`` the file at ``key`` under the directory. A 550 is "not there" only if a
        ``SIZE`` of the same path is refused too (550 also means "not allowed")."""
        path = self.directory / key
        name = path.name
        try:
            client = await self._connect(name)
            try:
                await client.remove_file(path)
            except aioftp.StatusCodeError as exc:
                if _codes(exc)[-1:] != ["550"]:
                    raise classify(exc, "delete", name) from None
                if await self._size(client, path, name, missing_ok=True) is not None:
                    raise classify(exc, "delete", name) from None
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError | PermanentUploadError):
                raise
            await self.close()  # a connection in an unknown state: never reuse it
            if isinstance(exc, UploadError):
                raise
            raise classify(exc, "delete", name) from None

    async def _call(self, action: str, name: str, aw: Any) -> Any:
        try:
            return await aw
        except Exception as exc:
            raise classify(exc, action, name) from None

    async def _make_folder(self, client: aioftp.Client, folder: PurePosixPath, name: str) -> None:
        """MKD each missing level of ``folder``. Another upload (a recording of the same tenant
        and day) may make a level between our look and our MKD, which is then refused: that is
        fine once the folder is there, and the levels below it are made on the next round."""
        refusal: aioftp.StatusCodeError | None = None
        for _ in range(len(folder.parts) + 1):
            try:
                await client.make_directory(folder)
                return
            except aioftp.StatusCodeError as exc:
                if _codes(exc)[-1:] != ["550"]:
                    raise classify(exc, "create the folder of", name) from None
                refusal = exc
            except Exception as exc:
                raise classify(exc, "create the folder of", name) from None
            with contextlib.suppress(aioftp.StatusCodeError):
                if await client.is_dir(folder):
                    return
        assert refusal is not None
        raise classify(refusal, "create the folder of", name) from None

    async def _size(
        self, client: aioftp.Client, path: PurePosixPath, name: str, missing_ok: bool = False
    ) -> int | None:
        try:
            _, info = await client.command(f"SIZE {path}", "213")
        except aioftp.StatusCodeError as exc:
            if missing_ok and _codes(exc)[-1:] == ["550"]:
                return None
            raise classify(exc, "check the size of", name) from None
        try:
            return int(info[-1].strip().split()[-1])
        except (ValueError, IndexError):
            raise TransientUploadError(
                f"the FTP server sent an unreadable SIZE reply for {name}; it will be retried"
            ) from None

    async def _send(
        self,
        client: aioftp.Client,
        local: Source,
        temp: PurePosixPath,
        offset: int,
        sealed: SealedFile,
    ) -> None:
        """STOR (or REST + STOR) what the server lacks; the SHA-256 covers the whole file."""
        reader = local.reader(CHUNK)
        pos = 0
        stream = await self._call(
            "start sending", sealed.name, client.upload_stream(temp, offset=offset)
        )
        try:
            async for data in reader.chunks():
                start, pos = pos, pos + len(data)
                if pos <= offset:
                    continue
                await stream.write(data if offset <= start else data[offset - start :])
            reader.verify()  # a changed backup is never finished (its temp name stays temp)
        except BaseException:
            stream.close()
            raise
        await self._call("finish sending", sealed.name, stream.finish())

    async def _check_hash(
        self, client: aioftp.Client, path: PurePosixPath, sealed: SealedFile
    ) -> None:
        _, info = await self._call(
            "hash", sealed.name, client.command(f"HASH {path}", "213", "1xx")
        )
        m = HASH_RE.match(info[-1]) if info else None
        if m is None:
            raise TransientUploadError(
                f"the FTP server sent an unreadable HASH reply for {sealed.name}; "
                "it will be retried"
            )
        if m.group(1).lower() != sealed.sha256:
            raise TransientUploadError(
                f"the FTP server's SHA-256 of {sealed.name} differs from the backup's (damaged "
                "in transit); it will be sent again"
            )

    async def _readback(
        self, client: aioftp.Client, path: PurePosixPath, sealed: SealedFile
    ) -> None:
        readback = Readback()
        try:
            async with client.download_stream(path) as stream:
                async for chunk in stream.iter_by_block(CHUNK):
                    await readback.update(chunk)
        except Exception as exc:
            raise classify(exc, "download", sealed.name) from None
        readback.check(sealed, "the FTP server")

    async def _rename(
        self, client: aioftp.Client, temp: PurePosixPath, final: PurePosixPath, name: str
    ) -> None:
        try:
            await client.rename(temp, final)
            return
        except aioftp.StatusCodeError as exc:
            if _codes(exc)[-1:] != ["550"] and _codes(exc)[-1:] != ["553"]:
                raise classify(exc, "rename", name) from None
        # Some servers refuse to rename over an existing file (an earlier, bad copy).
        with contextlib.suppress(aioftp.StatusCodeError):
            await client.remove_file(final)
        await self._call("rename", name, client.rename(temp, final))
