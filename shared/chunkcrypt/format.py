"""The chunkcrypt format's bytes, keys, sizes and errors (docs/backup-encryption.md).

    header  = magic "RGENC\\n" (6) | version 1 (1) | reserved 0 (1) | chunk_size u32 BE (4)
              | salt (32) | header tag (32)                                    = 76 bytes
    chunk i = AES-256-GCM(chunk_key, nonce_i, plaintext_i, aad_i) = ciphertext | tag (16)

    chunk_key | header_key = HKDF-SHA256(ikm=data key, salt=salt, info=INFO, L=64)
    header tag = HMAC-SHA256(header_key, header bytes 0..43)
    nonce_i    = 0x00000000 | u64 BE i
    aad_i      = header (76) | u16 len | recording id | u16 len | name | u64 BE i | u8 last

Nonces never repeat under one key: every file gets a fresh random 32-byte salt, so its chunk key is
its own (two files share one only if two random salts collide, ~2^-128 even for 2^64 files), and
within a file the nonce is the chunk index, which only ever goes up. A file is never appended to
or rewritten in place: writing it again means a new salt, hence a new key.
"""

from __future__ import annotations

import hmac
import os
import struct
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

BytesLike = bytes | bytearray | memoryview

MAGIC = b"RGENC\n"
VERSION = 1
KEY_SIZE = 32
SALT_SIZE = 32
TAG_SIZE = 16  # AES-GCM's full 128-bit tag: never truncated
HEADER_TAG_SIZE = 32
DEFAULT_CHUNK_SIZE = 64 * 1024
MIN_CHUNK_SIZE = 16
# A reader allocates one chunk at a time: the bound keeps a hostile header from asking for more.
MAX_CHUNK_SIZE = 16 * 1024 * 1024
MAX_CONTEXT_LENGTH = 0xFFFF  # recording id and name are u16-length-prefixed in the AAD
INFO = b"resguardo chunkcrypt v1 keys"

_BODY = struct.Struct(">6sBBI32s")  # magic, version, reserved, chunk_size, salt
HEADER_SIZE = _BODY.size + HEADER_TAG_SIZE
_NONCE = struct.Struct(">4xQ")
_CHUNK_AAD = struct.Struct(">QB")
_MAX_INDEX = (1 << 64) - 1


class ChunkCryptError(Exception):
    """Base of every error this format raises about the bytes it reads or writes."""


class TamperedError(ChunkCryptError):
    """The bytes are not what a writer produced under this key, recording id and name.

    ``chunk`` is the index of the chunk that failed (None for the header); ``reason`` says why.
    Neither ever holds key material or plaintext.
    """

    def __init__(self, reason: str, *, chunk: int | None = None) -> None:
        self.reason = reason
        self.chunk = chunk
        where = "header" if chunk is None else f"chunk {chunk}"
        super().__init__(f"{where}: {reason}")


class HeaderError(TamperedError):
    """The header is not a valid, authentic chunkcrypt header (or the data key is wrong)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)


class TruncatedError(TamperedError):
    """The file ends too early (or has a length no writer produces)."""


class Header(NamedTuple):
    version: int
    chunk_size: int
    salt: bytes
    tag: bytes


def check_chunk_size(chunk_size: int) -> int:
    if not isinstance(chunk_size, int) or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be an int in [{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}]")
    return chunk_size


def read_header(raw: BytesLike) -> Header:
    """Parse (NOT authenticate) a header, e.g. to learn the chunk size before a range read.

    The tag is checked only when the header is given to a reader with the data key.
    """
    raw = bytes(raw)
    if len(raw) < HEADER_SIZE:
        raise HeaderError(f"the file ends inside the header ({len(raw)} of {HEADER_SIZE} bytes)")
    magic, version, reserved, chunk_size, salt = _BODY.unpack_from(raw)
    if magic != MAGIC:
        raise HeaderError("not a chunkcrypt file (bad magic)")
    if version != VERSION:
        raise HeaderError(f"unsupported format version {version}")
    if reserved != 0:
        raise HeaderError("reserved header byte is not zero")
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise HeaderError(f"chunk size {chunk_size} is out of range")
    return Header(version, chunk_size, salt, raw[_BODY.size : HEADER_SIZE])


def ciphertext_size(plaintext_size: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """Size of the encrypted file for ``plaintext_size`` bytes (always at least one chunk)."""
    check_chunk_size(chunk_size)
    if plaintext_size < 0:
        raise ValueError("plaintext_size must not be negative")
    chunks = max(1, -(-plaintext_size // chunk_size))
    return HEADER_SIZE + plaintext_size + chunks * TAG_SIZE


def plaintext_size(ciphertext_size: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """Inverse of ``ciphertext_size``; ``TruncatedError`` for a size no writer produces.

    A writer ends with a short chunk, or with a full one when the plaintext fills it exactly, and
    writes an empty chunk only for an empty file: so each valid size maps to one plaintext size.
    """
    check_chunk_size(chunk_size)
    body = ciphertext_size - HEADER_SIZE
    if body < TAG_SIZE:
        raise TruncatedError(f"a file of {ciphertext_size} bytes is too short to hold a chunk")
    full, rest = divmod(body, chunk_size + TAG_SIZE)
    if rest == 0:
        return full * chunk_size
    if rest < TAG_SIZE or (rest == TAG_SIZE and full > 0):
        raise TruncatedError(f"{ciphertext_size} bytes is not a size a writer produces")
    return full * chunk_size + rest - TAG_SIZE


def locate(offset: int, chunk_size: int) -> tuple[int, int]:
    """(chunk index, bytes to skip in its plaintext) to read from plaintext ``offset``.

    An offset on a chunk boundary maps to the END of the previous chunk, not the start of the
    next: so resuming at the very end of a file lands on its last chunk (verified, nothing
    yielded) instead of a chunk that does not exist; elsewhere it costs one extra chunk's work.
    """
    if offset < 0:
        raise ValueError("offset must not be negative")
    if offset == 0:
        return 0, 0
    index = (offset - 1) // chunk_size
    return index, offset - index * chunk_size


def chunk_start(offset: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """Ciphertext byte offset of the chunk a reader needs to resume at plaintext ``offset``.

    For a range read: fetch the header (bytes 0..HEADER_SIZE-1), then ``bytes=chunk_start(...)-``,
    and give both to ``Decryptor(..., offset=offset)``.
    """
    index, _ = locate(offset, check_chunk_size(chunk_size))
    return HEADER_SIZE + index * (chunk_size + TAG_SIZE)


def _context(recording_id: str, name: str) -> bytes:
    """recording id and name, each u16-length-prefixed: no two pairs encode alike."""
    out = b""
    for label, value in (("recording_id", recording_id), ("name", name)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{label} must be a non-empty str")
        raw = value.encode()
        if len(raw) > MAX_CONTEXT_LENGTH:
            raise ValueError(f"{label} is longer than {MAX_CONTEXT_LENGTH} bytes")
        out += struct.pack(">H", len(raw)) + raw
    return out


def wipe(buf: bytearray) -> None:
    """Overwrite in place (best effort: CPython and OpenSSL may hold copies we cannot reach)."""
    buf[:] = bytes(len(buf))


class FileCipher:
    """One file's derived keys and AAD: seals or opens chunk ``i``. Never holds the data key.

    Keys live in bytearrays (wiped by ``wipe``) and in an ``AESGCM`` object, which is dropped;
    OpenSSL's own copy of the key schedule is freed with it, not overwritten by us.
    """

    __slots__ = ("_aad_prefix", "_aead", "_chunk_key", "chunk_size", "header")

    def __init__(
        self,
        data_key: BytesLike,
        recording_id: str,
        name: str,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        header: BytesLike | None = None,
        salt: bytes | None = None,
    ) -> None:
        """A writer's cipher (``header`` None: fresh salt) or a reader's (verifies ``header``)."""
        if len(data_key) != KEY_SIZE:
            raise ValueError(f"the data key must be {KEY_SIZE} bytes")
        context = _context(recording_id, name)
        if header is None:
            salt = os.urandom(SALT_SIZE) if salt is None else salt
            if len(salt) != SALT_SIZE:
                raise ValueError(f"salt must be {SALT_SIZE} bytes")
            body = _BODY.pack(MAGIC, VERSION, 0, check_chunk_size(chunk_size), salt)
            expected_tag = None
        else:
            parsed = read_header(header)
            chunk_size, salt = parsed.chunk_size, parsed.salt
            body, expected_tag = bytes(header[: _BODY.size]), parsed.tag
        okm = bytearray(
            HKDF(algorithm=hashes.SHA256(), length=2 * KEY_SIZE, salt=salt, info=INFO).derive(
                bytes(data_key)
            )
        )
        header_key = okm[KEY_SIZE:]
        try:
            tag = hmac.digest(header_key, body, "sha256")
        finally:
            wipe(header_key)
        # The header tag doubles as a key commitment (GCM alone is not key-committing): only the
        # right data key gives this tag, so a wrong key fails here, before any chunk is read.
        if expected_tag is not None and not hmac.compare_digest(tag, expected_tag):
            wipe(okm)
            raise HeaderError("header does not authenticate: wrong data key, or header altered")
        self._chunk_key = okm[:KEY_SIZE]
        wipe(okm)
        self._aead: AESGCM | None = AESGCM(self._chunk_key)
        self.chunk_size = chunk_size
        self.header = body + tag
        # The whole header is in every chunk's AAD too: a chunk is bound to its file's header
        # (salt, chunk size, version) and not only to the key derived from it.
        self._aad_prefix = self.header + context

    def __repr__(self) -> str:
        state = "wiped" if self._aead is None else "ready"
        return f"<FileCipher chunk_size={self.chunk_size} {state}>"

    def __getstate__(self) -> None:
        raise TypeError("a cipher holding keys cannot be pickled")

    def _cipher(self) -> AESGCM:
        if self._aead is None:
            raise ValueError("this cipher was wiped")
        return self._aead

    def seal(self, index: int, plaintext: BytesLike, last: bool) -> bytes:
        if index > _MAX_INDEX:
            raise ChunkCryptError("file too long: chunk index would overflow the nonce")
        aad = self._aad_prefix + _CHUNK_AAD.pack(index, last)
        return self._cipher().encrypt(_NONCE.pack(index), plaintext, aad)

    def seal_into(
        self, index: int, plaintext: BytesLike, last: bool, out: memoryview
    ) -> memoryview:
        """Like ``seal``, into the front of ``out`` (a reused buffer: no allocation per chunk)."""
        if index > _MAX_INDEX:
            raise ChunkCryptError("file too long: chunk index would overflow the nonce")
        aad = self._aad_prefix + _CHUNK_AAD.pack(index, last)
        view = out[: memoryview(plaintext).nbytes + TAG_SIZE]
        self._cipher().encrypt_into(_NONCE.pack(index), plaintext, aad, view)
        return view

    def open(self, index: int, blob: BytesLike, last: bool) -> bytes:
        """The verified plaintext of chunk ``index``; nothing at all if it does not authenticate."""
        self._check_length(index, blob)
        aad = self._aad_prefix + _CHUNK_AAD.pack(index, last)
        try:
            return self._cipher().decrypt(_NONCE.pack(index), blob, aad)
        except InvalidTag:
            raise self._failure(index, last) from None

    def open_into(self, index: int, blob: BytesLike, last: bool, out: memoryview) -> memoryview:
        """Like ``open``, into the front of ``out``, which holds zeros if it fails."""
        size = self._check_length(index, blob) - TAG_SIZE
        aad = self._aad_prefix + _CHUNK_AAD.pack(index, last)
        view = out[:size]
        try:
            self._cipher().decrypt_into(_NONCE.pack(index), blob, aad, view)
        except InvalidTag:
            # OpenSSL decrypts before it checks the tag: the buffer now holds unverified
            # plaintext, which must not outlive the failure.
            view[:] = bytes(size)
            raise self._failure(index, last) from None
        return view

    @staticmethod
    def _check_length(index: int, blob: BytesLike) -> int:
        size = memoryview(blob).nbytes
        if size < TAG_SIZE:
            raise TruncatedError(f"the file ends inside it ({size} bytes)", chunk=index)
        return size

    @staticmethod
    def _failure(index: int, last: bool) -> TamperedError:
        if last:
            why = "altered, or the file was cut short or extended here"
        else:
            why = "altered or out of order"
        return TamperedError(
            f"does not authenticate: {why}; or it belongs to another file or recording, "
            "or the recording id or name given is not the file's",
            chunk=index,
        )

    def wipe(self) -> None:
        wipe(self._chunk_key)
        self._aead = None
